"""``qiz dashboard``: the URL of this home's node's dashboard, with its API token."""

from __future__ import annotations

import webbrowser
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from qiz.cli.common import Session, node_call, run_async
from qiz.cli.output import UserError, console, emit, guarded
from qiz.web.token import TOKEN_FILE

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


PANEL = "Node and mesh"  # the heading of 'dashboard' in 'qiz --help'


def register(app: typer.Typer) -> None:
    app.command("dashboard", rich_help_panel=PANEL)(guarded(dashboard))


def api_token(session: Session) -> str:
    path = session.home.path / TOKEN_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise UserError(f"no API token at {path}: start the node first") from None
    except PermissionError:
        raise UserError(f"{path} cannot be read (permission denied)") from None


def api_get(session: Session, base: str, path: str) -> Any:
    """GET ``/api/PATH`` from the node's local API with the home's token."""
    import aiohttp

    async def fetch() -> Any:
        headers = {"Authorization": f"Bearer {api_token(session)}"}
        timeout = aiohttp.ClientTimeout(total=15)
        async with (
            aiohttp.ClientSession(timeout=timeout) as client,
            client.get(f"{base}api/{path}", headers=headers) as response,
        ):
            body = await response.json()
            if response.status != 200:
                raise UserError(f"the node's API refused: {body.get('error')}")
            return body

    try:
        return run_async(fetch)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UserError(f"the node's API at {base} did not answer: {exc}") from None


def dashboard(
    ctx: typer.Context,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the dashboard in the default browser.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Print the URL of the running node's dashboard (with its token) and open it if asked."""
    session: Session = ctx.obj
    status = node_call(session, "status", 5.0)
    api = status.get("api_url")
    if not api:
        raise UserError("the node serves no HTTP API (it was started with --no-api)")
    token = api_token(session)
    url = f"{api}?token={token}"
    if open_browser:
        webbrowser.open(url)
    data = {
        "url": url,
        "api_url": api,  # the same base URL as node status; endpoints under api/
        "port": urlsplit(api).port,  # for scripts: curl http://127.0.0.1:$PORT/api/...
        "token": token,
        "node_id": status["node_id"],
    }
    emit(as_json, data, lambda: console.print(url, markup=False, soft_wrap=True))

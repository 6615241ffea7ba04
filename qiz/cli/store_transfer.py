"""A put or get run through the node, with a progress bar fed by the node's events.

The node does the work; the command only asks for it over the control socket and waits for
the answer. To draw a bar, it names the transfer (a random id) and, in the same event loop,
follows the node's ``events`` long poll for ``store.progress`` events carrying that id
(``{"transfer", "op", "done", "total"}``, at most ~10 a second). No bar with ``--json`` or when
stderr is not a terminal: then the command is one plain request.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

from qiz.cli.common import Session, node_call, run_async
from qiz.cli.output import err_console

TRANSFER_TIMEOUT = 6 * 3600.0  # seconds the command waits for a put or get to finish
EVENTS_WAIT = 25.0  # seconds one events long poll may be held by the node
PROGRESS_KIND = "store.progress"


def run_transfer(session: Session, command: str, *, bar: bool, **arguments: Any) -> Any:
    """Run ``command`` (``store_put`` or ``store_get``) on the home's node and return its
    answer; with ``bar``, draw its progress on stderr while it runs."""
    if not bar:
        return node_call(session, command, TRANSFER_TIMEOUT, **arguments)
    # the first call also says, in the house's words, when no node runs in this home
    start = node_call(session, "events", after=0, wait=0)
    transfer = secrets.token_hex(8)
    op = "put" if command == "store_put" else "get"
    return run_async(
        lambda: _with_bar(
            session,
            command,
            transfer=transfer,
            op=op,
            after=int(start["last"]),
            arguments=arguments,
        )
    )


async def _with_bar(
    session: Session, command: str, *, transfer: str, op: str, after: int, arguments: dict[str, Any]
) -> Any:
    import asyncio

    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from qiz.control import ask

    home = session.home.path
    work = asyncio.ensure_future(
        ask(home, command, TRANSFER_TIMEOUT, transfer=transfer, **arguments)
    )
    with Progress(
        TextColumn(op),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        bar = progress.add_task(op, total=None)

        def draw(answer: dict[str, Any]) -> int:
            for event in answer["events"]:
                moved = progress_of(event, transfer)
                if moved is not None:
                    progress.update(bar, completed=moved[0], total=moved[1] or None)
            return int(answer["last"])

        try:
            while not work.done():
                poll = asyncio.ensure_future(
                    ask(home, "events", EVENTS_WAIT + 5, after=after, wait=EVENTS_WAIT)
                )
                done, _ = await asyncio.wait({work, poll}, return_when=asyncio.FIRST_COMPLETED)
                if poll not in done:
                    poll.cancel()
                    with contextlib.suppress(BaseException):
                        await poll
                    break
                if poll.exception() is not None:  # no bar then, but the work goes on
                    await asyncio.wait({work})
                    break
                after = draw(poll.result())
            if not work.cancelled() and work.exception() is None:
                # the node's last progress event came just before its answer: draw it
                with contextlib.suppress(Exception):
                    draw(await ask(home, "events", 10.0, after=after, wait=0))
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
    return work.result()


def progress_of(event: dict[str, Any], transfer: str) -> tuple[int, int] | None:
    """(done, total) bytes from a ``store.progress`` event of ``transfer``; None for any other
    event (or one whose figures are not counts)."""
    if event.get("kind") != PROGRESS_KIND or event.get("transfer") != transfer:
        return None
    done, total = event.get("done"), event.get("total")
    if not isinstance(done, int) or not isinstance(total, int) or done < 0 or total < 0:
        return None
    return min(done, total) if total else done, total

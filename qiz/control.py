"""The control socket's protocol, both ends: where it lives and how one request is carried.

A running node listens on ``node.sock`` in its home (a Unix socket, mode 0600: only the owner
can reach it). A client writes one JSON line ``{"cmd": OPERATION, ...arguments}`` and reads one
JSON line back: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ..., "status": ...}``.
The operations are those of :data:`qiz.node_api.OPERATIONS`, the same as the HTTP API's.

The node serves it (:mod:`qiz.node`); the CLI, the demo and the process helpers are clients.
Both ends import this module, which imports nothing of theirs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from qiz import QizError

CONTROL_SOCKET = "node.sock"
MAX_CONTROL_LINE = 64 * 1024 * 1024  # a request: a job spec fits
MAX_CONTROL_REPLY = 96 * 1024 * 1024  # a reply: a 64 MiB attestation file as base64 fits


class ReplyTooLarge(QizError):
    """The node's answer is over the reply limit (nothing was cut: it was refused whole)."""


class NodeNotRunning(QizError, ConnectionError):
    """No node answers on a home's control socket (none started, or it died: a stale socket)."""


async def control_request(
    home_path: Path, command: str, timeout: float = 5.0, **arguments: Any
) -> dict[str, Any]:
    """Send one operation to the node running in ``home_path`` and return its reply object;
    :class:`NodeNotRunning` if no node answers there (none started, or a stale socket left by
    a node that was killed)."""
    path = home_path / CONTROL_SOCKET
    if not path.exists():
        raise NodeNotRunning(f"no node is running for {home_path} (no {path})")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=MAX_CONTROL_REPLY), timeout
        )
    except (ConnectionRefusedError, FileNotFoundError):
        raise NodeNotRunning(
            f"no node is running for {home_path} (its control socket {path} is stale: "
            "the node was killed)"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise NodeNotRunning(f"no node is answering on {path}: {exc}") from None
    try:
        writer.write(json.dumps({"cmd": command, **arguments}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except ValueError:  # the reader's limit: an answer this large is refused, not parsed
        raise ReplyTooLarge(
            f"the node's answer to {command} is over {MAX_CONTROL_REPLY >> 20} MiB"
        ) from None
    except ConnectionError as exc:
        raise NodeNotRunning(f"the node at {path} dropped the connection: {exc}") from None
    finally:
        writer.close()
    if not line:
        raise NodeNotRunning(f"the node at {path} closed the connection without answering")
    return json.loads(line)


class NodeRefused(QizError):
    """The node answered a request with an error; it carries the node's own status, so the
    CLI exits as it would have had the error happened in the CLI itself."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.http_status = status
        self.exit_code = 1 if status == 422 else 2  # 422: a check ran and said no


async def ask(home_path: Path, command: str, timeout: float = 5.0, **arguments: Any) -> Any:
    """Run one operation on the node of ``home_path`` and return its result; its error, if
    any, as :class:`NodeRefused`; :class:`NodeNotRunning` if no node answers."""
    reply = await control_request(home_path, command, timeout, **arguments)
    if not reply.get("ok"):
        status = reply.get("status")
        raise NodeRefused(str(reply.get("error")), status if isinstance(status, int) else 400)
    return reply.get("result")

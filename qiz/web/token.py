"""The API token of a node's home: what the local HTTP API asks for (no aiohttp here, so the
CLI can read it without loading the server)."""

from __future__ import annotations

import secrets
from pathlib import Path

from qiz.fsio import write_atomic

TOKEN_FILE = "api.token"  # noqa: S105 - a file name


def load_or_create_token(home: Path | None) -> str:
    """The API token of a home (created on first start), or a fresh one for a home-less node."""
    if home is None:
        return secrets.token_urlsafe(32)
    path = home / TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
        if len(token) >= 32:
            return token
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    token = secrets.token_urlsafe(32)
    write_atomic(path, token.encode("ascii") + b"\n", mode=0o600)
    return token

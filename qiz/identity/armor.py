"""ASCII armor for small binary objects that people copy between machines (peer records).

    -----BEGIN QIZ PEER RECORD-----
    base64, 64 characters a line
    -----END QIZ PEER RECORD-----

:func:`dearmor` also takes the raw binary form, so a record saved either way can be used.
"""

from __future__ import annotations

import base64
import binascii

from qiz import QizError


class ArmorError(QizError, ValueError):
    """The text is not an armored object of the expected kind."""


def armor(kind: str, data: bytes) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"]) + "\n"


def dearmor(kind: str, blob: bytes, *, max_size: int) -> bytes:
    """The binary object in ``blob`` (armored text or raw bytes), at most ``max_size`` bytes."""
    begin = f"-----BEGIN {kind}-----".encode("ascii")
    end = f"-----END {kind}-----".encode("ascii")
    if len(blob) > 2 * max_size + 200:
        raise ArmorError(f"{kind.lower()} file is larger than any valid one")
    stripped = blob.strip()
    if not stripped.startswith(b"-----BEGIN"):
        if len(blob) > max_size:
            raise ArmorError(f"{kind.lower()} is over the {max_size}-byte limit")
        return blob
    if not stripped.startswith(begin) or not stripped.endswith(end):
        raise ArmorError(f"not a {kind.lower()}: the BEGIN/END lines are missing or wrong")
    body = b"".join(stripped[len(begin) : -len(end)].split())
    try:
        data = base64.b64decode(body, validate=True)
    except binascii.Error:
        raise ArmorError(f"{kind.lower()} is damaged: its base64 does not decode") from None
    if len(data) > max_size:
        raise ArmorError(f"{kind.lower()} is over the {max_size}-byte limit")
    return data

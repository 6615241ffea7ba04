"""The peers a node was linked to, remembered in its home so that a restart rejoins the mesh.

A node started without ``--peer`` and without ``bootstrap`` in config.toml would otherwise come
up alone after ``node stop; node start``. So the node writes ``HOME/peers.json`` (on stop, and
every :data:`SAVE_INTERVAL_S` while it runs): at most :data:`MAX_REMEMBERED_PEERS` entries
``ID@ip:port``, the peers linked most recently first, each with the first address of its signed
record and its id (which the next dial pins: an address now held by another node is refused).

Reading is forgiving: a missing, oversized, corrupt or hand-edited file, or an entry that is no
peer, gives fewer (or no) peers, never an error; a remembered peer that is gone is skipped at
the next start like a bootstrap peer that does not answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from qiz.fsio import read_bounded, write_atomic
from qiz.peer_ref import parse_peer_ref

PEERS_FILE = "peers.json"
MAX_REMEMBERED_PEERS = 16  # peers a home remembers (dialled at start when none is given)
MAX_PEERS_FILE = 64 * 1024  # bytes of peers.json read at most
SAVE_INTERVAL_S = 60.0  # a running node rewrites the list this often (when it changed)


def load(home: Path) -> list[str]:
    """The remembered peers (``ID@ip:port``), newest first; [] when there are none to read."""
    try:
        data = json.loads(read_bounded(home / PEERS_FILE, MAX_PEERS_FILE, "peers file"))
    except (OSError, ValueError):  # missing, too large, not JSON: nothing remembered
        return []
    entries = data.get("peers") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return []
    return _valid(entries)[:MAX_REMEMBERED_PEERS]


def merge(linked: Iterable[str], before: Iterable[str]) -> list[str]:
    """The list to remember: the peers linked now first, then those remembered before (one
    entry per id), cut to :data:`MAX_REMEMBERED_PEERS`."""
    seen: set[str] = set()
    out: list[str] = []
    for entry in _valid([*linked, *before]):
        ident = entry.partition("@")[0]
        if ident not in seen:
            seen.add(ident)
            out.append(entry)
    return out[:MAX_REMEMBERED_PEERS]


def save(home: Path, entries: list[str]) -> None:
    """Replace the remembered list (atomically: a crash leaves the old one or the new one)."""
    body = json.dumps({"peers": entries[:MAX_REMEMBERED_PEERS]}, indent=1) + "\n"
    write_atomic(home / PEERS_FILE, body.encode())


def _valid(entries: Iterable[object]) -> list[str]:
    """The entries that name a peer by id and address (``ID@ip:port``)."""
    out = []
    for entry in entries:
        if not isinstance(entry, str) or "@" not in entry:
            continue
        try:
            ref = parse_peer_ref(entry)
        except ValueError:
            continue
        if ref.address is not None and ref.node_id is not None:
            out.append(f"{ref.node_id}@{ref.address}")
    return out

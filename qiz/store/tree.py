"""The file tree of a content: path rules, entries, scanning a path to put, unpacking safely.

Paths are the one part of a manifest that reaches the file system, so their rules are strict
and checked twice: when a manifest is parsed (:func:`check_entries`) and again against the
target directory when unpacking (:func:`safe_target`). A path is relative, ``/``-separated,
each component 1 to 255 UTF-8 bytes, never ``.`` or ``..``, without NUL or ``\\``, at most
1,024 bytes in all; entries are sorted by their UTF-8 bytes, unique, and a file is never the
parent of another entry. Nothing here follows a symlink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qiz import QizError
from qiz.store.limits import (
    MAX_COMPONENT_BYTES,
    MAX_CONTENT,
    MAX_PATH_BYTES,
    MAX_TREE_ENTRIES,
)

FILE = "f"
DIR = "d"
KINDS = ("file", "dir")


class TreeError(QizError, ValueError):
    """A path or tree that breaks the rules; the message names the path."""


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One entry: a file (its bytes are the next ``size`` bytes of the stream) or a directory
    (listed so that an empty one survives)."""

    type: str  # "f" or "d"
    path: str
    size: int = 0
    executable: bool = False

    def to_cbor(self) -> list:
        """The entry as the manifest encodes it."""
        if self.type == FILE:
            return [FILE, self.path, self.size, self.executable]
        return [DIR, self.path]


def check_path(path: object) -> bytes:
    """The UTF-8 bytes of ``path`` if it follows the path rules, else :class:`TreeError`."""
    if not isinstance(path, str):
        raise TreeError("a tree path must be text")
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        raise TreeError(f"path {path!r} is not valid UTF-8") from None
    if not 0 < len(raw) <= MAX_PATH_BYTES:
        raise TreeError(f"path {path[:64]!r} is not 1 to {MAX_PATH_BYTES} bytes")
    if "\x00" in path or "\\" in path:
        raise TreeError(f"path {path!r} contains NUL or a backslash")
    for part in raw.split(b"/"):
        if not part:
            raise TreeError(f"path {path!r} is absolute or has an empty component")
        if part in (b".", b".."):
            raise TreeError(f"path {path!r} has a '.' or '..' component")
        if len(part) > MAX_COMPONENT_BYTES:
            raise TreeError(f"path {path[:64]!r} has a component over {MAX_COMPONENT_BYTES} bytes")
    return raw


def _uint(value: object, what: str, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise TreeError(f"{what} must be an integer from 0 to {limit}")
    return value


def parse_entry(value: object) -> TreeEntry:
    """A :class:`TreeEntry` from its CBOR form, with its path checked."""
    if not isinstance(value, list) or not value or value[0] not in (FILE, DIR):
        raise TreeError("a tree entry is ['f', path, size, executable] or ['d', path]")
    if value[0] == FILE:
        if len(value) != 4:
            raise TreeError("a file entry is ['f', path, size, executable]")
        _, path, size, executable = value
        check_path(path)
        _uint(size, f"size of {path!r}", MAX_CONTENT)
        if not isinstance(executable, bool):
            raise TreeError(f"the executable flag of {path!r} must be a boolean")
        return TreeEntry(FILE, path, size, executable)
    if len(value) != 2:
        raise TreeError("a directory entry is ['d', path]")
    check_path(value[1])
    return TreeEntry(DIR, value[1])


def check_entries(entries: Sequence[TreeEntry], kind: str, size: int) -> None:
    """The whole-tree rules: count, order, uniqueness, no file as a parent, a ``file`` content
    holding exactly one file named by a base name, and the files' sizes adding up to ``size``."""
    if kind not in KINDS:
        raise TreeError(f"content kind must be 'file' or 'dir', got {kind!r}")
    if len(entries) > MAX_TREE_ENTRIES:
        raise TreeError(f"a tree holds at most {MAX_TREE_ENTRIES} entries, got {len(entries)}")
    if kind == "file" and (len(entries) != 1 or entries[0].type != FILE or "/" in entries[0].path):
        raise TreeError("a file content has exactly one file entry, named by a base name")
    previous = b""
    files: set[bytes] = set()
    total = 0
    for entry in entries:
        raw = check_path(entry.path)
        if previous and raw <= previous:
            raise TreeError(f"path {entry.path!r} is out of order or repeated")
        previous = raw
        # An ancestor is a byte prefix of its descendants, so it always sorts (and is seen)
        # first; siblings may sort between them ("a" < "a-b" < "a/x"), hence the set.
        cut = raw.find(b"/")
        while cut != -1:
            if raw[:cut] in files:
                raise TreeError(f"path {entry.path!r} lies under a file")
            cut = raw.find(b"/", cut + 1)
        if entry.type == FILE:
            files.add(raw)
            total += entry.size
    if total != size:
        raise TreeError(f"the files' sizes add up to {total}, the content is {size} bytes")


def parse_entries(value: object, kind: str, size: int) -> tuple[TreeEntry, ...]:
    """The checked entries of a tree from its CBOR form (a list)."""
    if not isinstance(value, list):
        raise TreeError("a tree is a list of entries")
    if len(value) > MAX_TREE_ENTRIES:
        raise TreeError(f"a tree holds at most {MAX_TREE_ENTRIES} entries, got {len(value)}")
    entries = tuple(parse_entry(item) for item in value)
    check_entries(entries, kind, size)
    return entries


def entries_to_cbor(entries: Sequence[TreeEntry]) -> list:
    """The CBOR form of a tree (what ``tree`` holds, or what is sealed)."""
    return [entry.to_cbor() for entry in entries]

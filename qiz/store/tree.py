"""The file tree of a content: path rules, entries, scanning a path to put, unpacking safely.

Paths are the one part of a manifest that reaches the file system, so their rules are strict
and checked twice: when a manifest is parsed (:func:`check_entries`) and again against the
target directory when unpacking (:func:`safe_target`). A path is relative, ``/``-separated,
each component 1 to 255 UTF-8 bytes, never ``.`` or ``..``, without NUL or ``\\``, at most
1,024 bytes in all; entries are sorted by their UTF-8 bytes, unique, and a file is never the
parent of another entry. Nothing here follows a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qiz import QizError
from qiz.fsio import fsync_directory
from qiz.store.direct import BOUNCE_SIZE, DIRECT_FROM, Bounce, DirectAppender
from qiz.store.limits import (
    MAX_COMPONENT_BYTES,
    MAX_CONTENT,
    MAX_PATH_BYTES,
    MAX_TREE_ENTRIES,
)

FILE = "f"
DIR = "d"
KINDS = ("file", "dir")


IOV_MAX = 1024  # buffers one writev takes (Linux's UIO_MAXIOV)
TEMP_PREFIX = ".qiz-get-"
TEMP_SUFFIX = ".part"
OLD_SUFFIX = ".old"
# ".qiz-get-<host>-<pid>-<12 hex>.part" (being written) or ".old" (a forced get's previous
# target, removed right after the new one is in place). <host> names this machine's boot (a
# pid means something only there: a volume shared with another host or container never has
# its temps judged by our pids). Only a ".part" of this boot whose <pid> is gone is stale; an
# ".old" is the user's data and is never removed by anyone but the get that made it.
TEMP_NAME = re.compile(r"^\.qiz-get-([0-9a-f]{8})-(\d+)-[0-9a-f]{12}\.(part|old)$")


class TreeError(QizError, ValueError):
    """A path or tree that breaks the rules; the message names the path."""


class UnpackError(TreeError):
    """Unpacking a stream into a target failed; nothing was put at the target."""


class TargetExists(UnpackError):
    """The target of a get exists and ``force`` was not given."""

    http_status = 409


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


# ----------------------------------------------------------------------------- scanning


@dataclass(frozen=True, slots=True)
class StreamFile:
    """A file of the stream: its entry path, where its bytes are, and its size at scan time."""

    path: str
    source: Path
    size: int


@dataclass(frozen=True, slots=True)
class Scan:
    """What :func:`scan` found: the content's kind, its checked entries, the files in stream
    order (tree order) and the stream's length."""

    kind: str
    entries: tuple[TreeEntry, ...]
    files: tuple[StreamFile, ...]
    size: int
    name: str  # the base name of what was scanned (a listing shows it)


def _special(mode: int) -> str | None:
    if stat.S_ISLNK(mode):
        return "a symbolic link (store put never follows links; copy what it points to)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file or directory"
    return None


def _checked(rel: str, where: Path) -> None:
    try:
        check_path(rel)
    except TreeError as exc:
        raise TreeError(f"cannot store {where}: {exc}") from None


def scan(path: Path) -> Scan:
    """The tree under ``path`` (a file or a directory), refusing anything but regular files and
    directories (a symlink even when it points inside, a device, a socket, a FIFO), naming it,
    and refusing paths, entry counts or sizes over the limits as soon as they are seen, so a
    huge or deep tree costs no more than the limits."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise TreeError(f"cannot store {path}: {exc.strerror}") from None
    problem = _special(st.st_mode)
    if problem:
        raise TreeError(f"cannot store {path}: it is {problem}")
    name = os.path.basename(os.path.abspath(path)) or "/"
    if stat.S_ISREG(st.st_mode):
        _checked(name, path)
        _check_size(st.st_size, path)
        entry = TreeEntry(FILE, name, st.st_size, bool(st.st_mode & stat.S_IXUSR))
        return Scan("file", (entry,), (StreamFile(name, path, st.st_size),), st.st_size, name)
    entries, sources, total = _walk(path)
    entries.sort(key=lambda e: e.path.encode("utf-8"))
    check_entries(entries, "dir", total)
    files = tuple(StreamFile(e.path, sources[e.path], e.size) for e in entries if e.type == FILE)
    return Scan("dir", tuple(entries), files, total, name)


def _walk(path: Path) -> tuple[list[TreeEntry], dict[str, Path], int]:
    """The entries under directory ``path`` (files and empty directories), where each file's
    bytes are, and their total; depth-first with an explicit stack (no recursion limit)."""
    entries: list[TreeEntry] = []
    sources: dict[str, Path] = {}
    total = 0
    stack: list[tuple[Path, str]] = [(path, "")]
    directories = 0
    while stack:
        directory, prefix = stack.pop()
        directories += 1
        if directories > MAX_TREE_ENTRIES:
            raise TreeError(f"cannot store {path}: it holds over {MAX_TREE_ENTRIES} directories")
        try:
            children = []
            with os.scandir(directory) as listing:
                for child in listing:  # counted while listing: a huge directory stops early
                    children.append(child)
                    if len(children) + len(entries) > MAX_TREE_ENTRIES:
                        raise TreeError(
                            f"cannot store {path}: it holds over {MAX_TREE_ENTRIES} entries"
                        )
            children.sort(key=lambda e: e.name)
        except OSError as exc:
            raise TreeError(f"cannot store {directory}: {exc.strerror}") from None
        if not children and prefix:
            entries.append(TreeEntry(DIR, prefix.rstrip("/")))
        for child in children:
            rel = prefix + child.name
            full = Path(child.path)
            _checked(rel, full)
            if len(entries) >= MAX_TREE_ENTRIES:
                raise TreeError(f"cannot store {path}: it holds over {MAX_TREE_ENTRIES} entries")
            try:
                mode = child.stat(follow_symlinks=False)
            except OSError as exc:
                raise TreeError(f"cannot store {full}: {exc.strerror}") from None
            problem = _special(mode.st_mode)
            if problem:
                raise TreeError(f"cannot store {full}: it is {problem}")
            if stat.S_ISDIR(mode.st_mode):
                stack.append((full, rel + "/"))
                continue
            total += mode.st_size
            _check_size(total, path)
            entries.append(TreeEntry(FILE, rel, mode.st_size, bool(mode.st_mode & stat.S_IXUSR)))
            sources[rel] = full
    return entries, sources, total


def _check_size(size: int, path: Path) -> None:
    if size > MAX_CONTENT:
        raise TreeError(f"cannot store {path}: over the {MAX_CONTENT}-byte limit of one content")


# ----------------------------------------------------------------------------- unpacking


def safe_target(root: Path, rel: str) -> Path:
    """Where entry ``rel`` goes under ``root``: the path rules checked again, and no symlink
    on the way (none is ever created by unpacking, so one there was put by someone else)."""
    check_path(rel)
    target = Path(root)
    for part in rel.split("/"):
        target = target / part
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.lstat(target).st_mode):
                raise UnpackError(f"{target} is a symbolic link; refusing to write through it")
    return target


def _boot_tag() -> str:
    """Eight hex digits naming this host and boot (the kernel's boot id, else the host name)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as source:
            seed = source.read(64)
    except OSError:
        seed = b""
    return hashlib.sha256(seed + os.uname().nodename.encode()).hexdigest()[:8]


BOOT_TAG = _boot_tag()


def _after(views: list[memoryview], written: int) -> list[memoryview]:
    """What is left of ``views`` once ``written`` bytes of them went out (a short writev)."""
    while views and written >= len(views[0]):
        written -= len(views.pop(0))
    if views and written:
        views[0] = views[0][written:]
    return views


def _temp_name(suffix: str) -> str:
    return f"{TEMP_PREFIX}{BOOT_TAG}-{os.getpid()}-{secrets.token_hex(6)}{suffix}"


class Unpacker:
    """Writes a content's stream into a fresh temporary file or directory beside ``target``
    (so on the same file system) and renames it into place only in :meth:`finish`, after every
    byte arrived: a get that fails or is killed never leaves a partial target, only a temp
    named ``.qiz-get-<pid>-<hex>.part`` that :func:`remove_stale_temps` recognises.

    ``target`` must not exist unless ``force``; files get the executable bit from their
    entries (under the umask), directories the umask's usual mode.
    """

    def __init__(
        self, target: Path, kind: str, entries: Sequence[TreeEntry], *, force: bool = False
    ) -> None:
        check_entries(entries, kind, sum(e.size for e in entries if e.type == FILE))
        self.target = Path(os.path.abspath(target))
        self.kind = kind
        self.force = force
        parent = self.target.parent
        if not parent.is_dir():
            raise UnpackError(f"cannot write {self.target}: {parent} is not a directory")
        self._check_free()
        self.temp = parent / _temp_name(TEMP_SUFFIX)
        self._files = [e for e in entries if e.type == FILE]
        self._next = 0
        self._fd = -1
        self._left = 0
        self._done = False
        # a large file goes to disk around the page cache (qiz.store.direct), through one
        # aligned buffer made when the first such file opens
        self._bounce: Bounce | None = None
        self._appender: DirectAppender | None = None
        try:
            if kind == "dir":
                os.mkdir(self.temp, 0o777)
                for entry in entries:
                    if entry.type == DIR:
                        self._makedirs(entry.path)
            self._advance()
        except BaseException:
            self.abort()
            raise

    def _check_free(self) -> None:
        if not os.path.lexists(self.target):
            return
        if not self.force:
            raise TargetExists(f"{self.target} exists; refusing to overwrite it (use --force)")
        is_dir = os.path.isdir(self.target) and not os.path.islink(self.target)
        if is_dir != (self.kind == "dir"):  # --force replaces like with like, never more
            have = "a directory" if is_dir else "not a directory"
            raise TargetExists(
                f"{self.target} is {have} and the content is a {self.kind}; "
                "--force replaces only a target of the same kind: choose another path"
            )

    def _makedirs(self, rel: str) -> Path:
        path = safe_target(self.temp, rel)
        built = self.temp
        for part in rel.split("/"):
            built = built / part
            try:
                os.mkdir(built, 0o777)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(built).st_mode):
                    raise UnpackError(
                        f"cannot unpack {rel!r}: {built.name} is not a directory"
                    ) from None
        return path

    def _open(self, entry: TreeEntry) -> int:
        if self.kind == "file":
            path = self.temp
        else:
            if "/" in entry.path:
                self._makedirs(entry.path.rsplit("/", 1)[0])
            path = safe_target(self.temp, entry.path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(path, flags, 0o777 if entry.executable else 0o666)
        except FileExistsError:
            # two entries that one file system sees as one name (case or normalisation)
            raise UnpackError(
                f"cannot unpack {entry.path!r}: the name is already taken here"
            ) from None

    def _close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            appender, self._appender = self._appender, None
            try:
                if appender is not None:
                    appender.finish()
                os.fsync(fd)
            finally:
                os.close(fd)

    def _release_bounce(self) -> None:
        if self._bounce is not None:
            self._bounce.close()
            self._bounce = None

    def _advance(self) -> None:
        """Close a finished file and open the next one; empty files are made on the way."""
        while self._left == 0:
            self._close()
            if self._next >= len(self._files):
                return
            entry = self._files[self._next]
            self._next += 1
            self._fd = self._open(entry)
            self._left = entry.size
            if entry.size >= DIRECT_FROM:
                if self._bounce is None:
                    self._bounce = Bounce(BOUNCE_SIZE)
                self._appender = DirectAppender(self._fd, self._bounce)

    def write(self, data: bytes) -> None:
        """The next bytes of the stream (any split: a chunk may span files)."""
        view = memoryview(data)
        while view:
            if self._fd < 0:
                raise UnpackError("the stream is longer than its tree says")
            take = min(self._left, len(view))
            if self._appender is not None:
                self._appender.write(view[:take])
                written = take
            else:
                written = os.write(self._fd, view[:take])
            view = view[written:]
            self._left -= written
            self._advance()

    def write_many(self, pieces: Sequence[bytes]) -> None:
        """The next pieces of the stream, with one ``writev`` per file they fall in: what
        :class:`qiz.store.writer.BackgroundWriter` calls from its thread, where every system
        call costs a wait for the interpreter lock on the way back."""
        views = [memoryview(piece) for piece in pieces if piece]
        while views:
            if self._fd < 0:
                raise UnpackError("the stream is longer than its tree says")
            batch, room = [], self._left
            while views and room:
                view = views[0]
                if len(view) <= room:
                    batch.append(views.pop(0))
                    room -= len(view)
                else:
                    batch.append(view[:room])
                    views[0] = view[room:]
                    room = 0
            if self._appender is not None:
                for view in batch:
                    self._appender.write(view)
                    self._left -= len(view)
                batch = []
            while batch:
                group, batch = batch[:IOV_MAX], batch[IOV_MAX:]
                while group:
                    written = os.writev(self._fd, group)
                    self._left -= written
                    group = _after(group, written)
            self._advance()

    def finish(self) -> Path:
        """Check that the stream was complete and move the result into place."""
        if self._fd >= 0 or self._next < len(self._files):
            missing = self._left + sum(e.size for e in self._files[self._next :])
            raise UnpackError(f"the stream ended {missing} bytes early")
        self._check_free()
        parent = self.target.parent
        if self.force and os.path.lexists(self.target):
            old = parent / _temp_name(OLD_SUFFIX)
            os.rename(self.target, old)
            os.rename(self.temp, self.target)
            _remove(old)
        else:
            _place(self.temp, self.target)
        self._done = True
        self._release_bounce()
        fsync_directory(parent)
        return self.target

    def abort(self) -> None:
        """Remove the temp (idempotent; nothing at the target is touched)."""
        with contextlib.suppress(OSError):
            self._close()
        self._release_bounce()
        if not self._done:
            _remove(self.temp)
            self._done = True

    def __enter__(self) -> Unpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.abort()


def _place(temp: Path, target: Path) -> None:
    """Rename ``temp`` to ``target`` without replacing anything that appeared there meanwhile:
    a hard link for a file (fails if the name exists), rename for a directory (fails onto a
    non-empty one)."""
    if temp.is_dir():
        try:
            os.rename(temp, target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise TargetExists(
                    f"{target} exists; refusing to overwrite it (use --force)"
                ) from None
            raise
        return
    try:
        os.link(temp, target)
    except FileExistsError:
        raise TargetExists(f"{target} exists; refusing to overwrite it (use --force)") from None
    except OSError as exc:  # a file system without hard links
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        os.rename(temp, target)
        return
    os.unlink(temp)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove the temps that killed gets left in ``directory`` (``.qiz-get-<pid>-*.part`` or
    ``.old`` whose process is gone); a running get's temps are left alone."""
    removed = []
    with os.scandir(directory) as listing:
        for entry in listing:
            match = TEMP_NAME.match(entry.name)
            if (
                match
                and match.group(3) == "part"
                and match.group(1) == BOOT_TAG
                and int(match.group(2)) != os.getpid()
                and not _alive(int(match.group(2)))
            ):
                _remove(Path(entry.path))
                removed.append(Path(entry.path))
    return removed

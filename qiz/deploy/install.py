"""The atomic installer: a verified version appears whole or not at all, and ``current`` always
names a complete version.

An install stages the files into ``deploy/NAME/.staging-<random>/``, checking every path
(relative, no ``..``, no links, no devices), every size (:mod:`qiz.deploy.runtime_limits`) and
every sha256 against the table the verified metadata gave; writes an install record; makes the
tree read-only; fsyncs every file and directory; and renames the staging directory to
``VERSION/`` in one step. A version directory therefore exists only complete and verified.

The switch is a journal then a pointer: the state file (written atomically, :mod:`qiz.fsio`)
is updated first to say which version is current, then a temp symlink to that version is
renamed over ``current``. A kill between the two leaves ``current`` on the previous version,
which is complete; :meth:`Installer.recover` (run by every new ``Installer``) finishes the
switch the journal asked for, and removes staging, temp-link and trash leftovers. So a kill -9
at any moment leaves ``current`` on the previous version or the new one, never on a half one
(docs/deploy-runtime.md has the whole argument).

Rollback walks the journal's history back to the latest earlier version that is still
installed and not marked bad, and marks the version it leaves bad, so a follower does not
install it again unless asked to.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qiz.deploy.layout import (
    INSTALL_RECORD,
    LEFTOVER_PREFIXES,
    LINK_PREFIX,
    RESERVED,
    STAGING_PREFIX,
    TRASH_PREFIX,
    BundleDirs,
    check_name,
)
from qiz.deploy.runtime_errors import (
    BundleFilesMismatch,
    BundleTooLarge,
    FileHashMismatch,
    InstallerBusy,
    NoPreviousVersion,
    UnsafeBundlePath,
    UnsafeName,
    VersionConflict,
    VersionMarkedBad,
    VersionNotInstalled,
)
from qiz.deploy.runtime_limits import (
    MAX_HISTORY,
    MAX_INSTALL_BYTES,
    MAX_INSTALL_DEPTH,
    MAX_INSTALL_FILES,
    MAX_INSTALL_PATH,
    MAX_STATE_BYTES,
)
from qiz.fsio import fsync_directory, read_bounded, write_atomic

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_RECORD_BOUND = MAX_INSTALL_FILES * (MAX_INSTALL_PATH + 128)  # an install record's bytes
FORMAT = 1


# ---------------------------------------------------------------------------------- checks


def check_relative_path(rel: str) -> tuple[str, ...]:
    """The components of ``rel`` if it stays inside the install directory; otherwise
    :class:`UnsafeBundlePath` (absolute, ``..``, ``.``, empty parts, backslashes, NUL, too
    long or deep, or the installer's own record name)."""
    if not isinstance(rel, str) or not rel:
        raise UnsafeBundlePath("a bundle file has an empty path")
    if len(rel.encode()) > MAX_INSTALL_PATH:
        raise UnsafeBundlePath(f"bundle path {rel[:60]!r}... is over {MAX_INSTALL_PATH} bytes")
    if rel.startswith("/"):
        raise UnsafeBundlePath(f"bundle path {rel!r} is absolute")
    if "\\" in rel or "\0" in rel:
        raise UnsafeBundlePath(f"bundle path {rel!r} has a backslash or NUL")
    parts = tuple(rel.split("/"))
    if ".." in parts:
        raise UnsafeBundlePath(f"bundle path {rel!r} climbs out with ..")
    if any(part in ("", ".") for part in parts):
        raise UnsafeBundlePath(f"bundle path {rel!r} has an empty or . component")
    if len(parts) > MAX_INSTALL_DEPTH:
        raise UnsafeBundlePath(f"bundle path {rel!r} is over {MAX_INSTALL_DEPTH} levels deep")
    if parts[0] == INSTALL_RECORD:
        raise UnsafeBundlePath(f"bundle path {rel!r} is reserved for the installer")
    return parts


def check_table(
    names: Collection[str],
    expected: Mapping[str, str],
    executables: Collection[str] = (),
    sizes: Mapping[str, int] | None = None,
) -> None:
    """The files offered are exactly the files expected, each path safe, each hash a sha256,
    each declared size a count within the limits."""
    if len(expected) > MAX_INSTALL_FILES or len(names) > MAX_INSTALL_FILES:
        raise BundleTooLarge(f"a bundle may have at most {MAX_INSTALL_FILES} files")
    for rel, digest in expected.items():
        check_relative_path(rel)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise BundleFilesMismatch(f"the expected hash of {rel!r} is not a sha256 in hex")
    missing = sorted(set(expected) - set(names))
    extra = sorted(set(names) - set(expected))
    if missing:
        raise BundleFilesMismatch(f"bundle file {missing[0]!r} is missing ({len(missing)} in all)")
    if extra:
        raise BundleFilesMismatch(f"bundle file {extra[0]!r} is not in the verified file list")
    if sizes is not None:
        for rel, size in sizes.items():
            if rel not in expected or not isinstance(size, int) or size < 0:
                raise BundleFilesMismatch(f"the declared size of {rel!r} is not a file's size")
        if sum(sizes.values()) > MAX_INSTALL_BYTES:
            raise BundleTooLarge(f"the bundle declares over {MAX_INSTALL_BYTES} bytes of files")
    stray = sorted(set(executables) - set(expected))
    if stray:
        raise BundleFilesMismatch(f"executable {stray[0]!r} is not in the verified file list")


def verify_version(path: Path) -> dict[str, Any]:
    """Re-hash an installed version against its install record; the record if every file is
    there, regular, unchanged and nothing else is; a :class:`CheckFailed` subclass if not."""
    try:
        record = json.loads(read_bounded(path / INSTALL_RECORD, _RECORD_BOUND, "install record"))
        files = record["files"]
        assert isinstance(files, dict)
    except (OSError, ValueError, KeyError, AssertionError) as exc:
        raise BundleFilesMismatch(f"{path} has no readable install record ({exc})") from None
    seen: set[str] = set()
    for rel, _full in _walk_files(path):
        if rel != INSTALL_RECORD:
            seen.add(rel)
    if seen != set(files):
        odd = sorted(seen ^ set(files))
        raise BundleFilesMismatch(f"{path}: file {odd[0]!r} differs from the install record")
    for rel, digest in files.items():
        with open(path / rel, "rb") as handle:
            got = hashlib.file_digest(handle, "sha256").hexdigest()
        if got != digest:
            raise FileHashMismatch(f"{path / rel} has sha256 {got}, the record says {digest}")
    return record


def _walk_files(top: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every regular file under ``top``; links and special files
    are refused, never followed."""
    stack: list[tuple[Path, tuple[str, ...]]] = [(top, ())]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                parts = (*prefix, entry.name)
                rel = "/".join(parts)
                if entry.is_symlink():
                    raise UnsafeBundlePath(f"bundle file {rel!r} is a symlink")
                if entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), parts))
                elif entry.is_file(follow_symlinks=False):
                    yield rel, Path(entry.path)
                else:
                    raise UnsafeBundlePath(f"bundle file {rel!r} is not a regular file")


def remove_tree(path: Path) -> None:
    """Remove a (possibly read-only) tree, a file or a link; nothing if it is gone."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    for root, _dirs, _files in os.walk(path):
        os.chmod(root, 0o700)
    shutil.rmtree(path)


# ---------------------------------------------------------------------------------- state


@dataclass
class InstallState:
    """The journal: the versions that were current, oldest first (the last one is current),
    and the versions rolled back from."""

    history: list[str] = field(default_factory=list)
    bad: set[str] = field(default_factory=set)

    @property
    def current(self) -> str | None:
        return self.history[-1] if self.history else None

    def to_bytes(self, name: str) -> bytes:
        body = {"format": FORMAT, "name": name, "history": self.history, "bad": sorted(self.bad)}
        return json.dumps(body, indent=1).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> InstallState:
        body = json.loads(data)
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ValueError("not an install state")
        history = [check_name(v, "version") for v in body.get("history", [])]
        bad = {check_name(v, "version") for v in body.get("bad", [])}
        return cls(history[-MAX_HISTORY:], bad)


# ---------------------------------------------------------------------------------- installer


class Installer:
    """One bundle's versions under ``root/NAME`` (``root`` is a node's ``deploy/``).

    Every change holds an exclusive ``flock`` on ``NAME/.lock`` (:class:`InstallerBusy` if
    another process has it), so two installers never interleave; creating one recovers from
    whatever a killed one left.
    """

    def __init__(self, root: Path, name: str) -> None:
        self.dirs = BundleDirs(root, name)
        self.name = self.dirs.name
        self.dir = self.dirs.dir
        self.removed_leftovers: list[str] = self.recover()

    # ------------------------------------------------------------------ reading

    def current(self) -> str | None:
        """The version ``current`` points at on disk (None before the first install)."""
        try:
            target = os.readlink(self.dirs.current)
        except OSError:
            return None
        try:
            check_name(target, "version")
        except UnsafeName:
            return None
        return target if (self.dir / target).is_dir() else None

    def current_dir(self) -> Path | None:
        """The current version's own directory (not the link: a child started there stays on
        its version across a later switch)."""
        version = self.current()
        return None if version is None else self.dir / version

    def path(self, version: str) -> Path:
        path = self.dirs.version(version)
        if not path.is_dir() or path.is_symlink():
            raise VersionNotInstalled(f"bundle {self.name} has no installed version {version}")
        return path

    def installed(self) -> list[str]:
        """Installed versions, in name order."""
        if not self.dir.is_dir():
            return []
        return sorted(
            entry.name
            for entry in os.scandir(self.dir)
            if not entry.name.startswith(".")
            and entry.name not in RESERVED
            and entry.is_dir(follow_symlinks=False)
        )

    def state(self) -> InstallState:
        return self._read_state() or InstallState()

    def previous(self) -> str | None:
        """The version a rollback would switch to."""
        return self._previous(self.state())

    def bad(self) -> set[str]:
        return set(self.state().bad)

    def verify(self, version: str) -> dict[str, Any]:
        return verify_version(self.path(version))

    # ------------------------------------------------------------------ changing

    def install(
        self,
        version: str,
        files: Mapping[str, bytes],
        expected: Mapping[str, str],
        *,
        executables: Collection[str] = (),
        sizes: Mapping[str, int] | None = None,
        switch: bool = True,
        allow_bad: bool = False,
    ) -> Path:
        """Install ``files`` (relative path -> bytes) as ``version``, each checked against
        ``expected`` (relative path -> sha256 hex) and, if given, ``sizes`` (relative path ->
        the declared length: nothing past it is written, a longer file is refused), then switch
        ``current`` to it unless ``switch`` is false. Installing an already installed version
        with the same files only switches; with other files it is a
        :class:`VersionConflict`."""
        check_name(version, "version")
        check_table(files.keys(), expected, executables, sizes)
        total = sum(len(data) for data in files.values())
        if total > MAX_INSTALL_BYTES:
            raise BundleTooLarge(f"bundle {self.name} {version} has {total} bytes, over the limit")
        entries = [(rel, lambda data=files[rel]: iter((data,))) for rel in sorted(files)]
        return self._install(
            version,
            entries,
            expected,
            set(executables),
            sizes=sizes,
            switch=switch,
            allow_bad=allow_bad,
        )

    def install_from_dir(
        self,
        version: str,
        source: Path,
        expected: Mapping[str, str],
        *,
        sizes: Mapping[str, int] | None = None,
        switch: bool = True,
        allow_bad: bool = False,
    ) -> Path:
        """Install the regular files under ``source`` (a symlink, device or FIFO anywhere in it
        is refused); a file is executable in the install if it is in ``source``."""
        check_name(version, "version")
        found: dict[str, Path] = {}
        executables: set[str] = set()
        size = 0
        for rel, full in _walk_files(Path(source)):
            found[rel] = full
            info = full.lstat()
            size += info.st_size
            if info.st_mode & 0o111:
                executables.add(rel)
            if len(found) > MAX_INSTALL_FILES or size > MAX_INSTALL_BYTES:
                raise BundleTooLarge(f"{source} is over the install limits")
        check_table(found.keys(), expected, executables, sizes)
        entries = [(rel, lambda full=found[rel]: _read_chunks(full)) for rel in sorted(found)]
        return self._install(
            version,
            entries,
            expected,
            executables,
            sizes=sizes,
            switch=switch,
            allow_bad=allow_bad,
        )

    def switch(self, version: str) -> None:
        """Make an installed version current (its previous current becomes ``previous``)."""
        with self._locked():
            self.path(version)
            self._switch(version)

    def rollback(self, *, mark_bad: bool = True) -> str:
        """Switch back to the previous good version and return it; the version left is marked
        bad unless ``mark_bad`` is false. :class:`NoPreviousVersion` if there is none."""
        with self._locked():
            state = self.state()
            leaving = state.current
            target = self._previous(state)
            if target is None:
                raise NoPreviousVersion(
                    f"bundle {self.name} has no earlier good version to roll back to from {leaving}"
                )
            cut = len(state.history) - 1 - state.history[::-1].index(target)
            state.history = state.history[: cut + 1]
            if mark_bad and leaving is not None:
                state.bad.add(leaving)
            self._write_state(state)
            self._point_current(target)
            return target

    def mark_bad(self, version: str) -> None:
        with self._locked():
            state = self.state()
            state.bad.add(check_name(version, "version"))
            self._write_state(state)

    def prune(self, keep: int = 2) -> list[str]:
        """Remove installed versions other than the current one, the previous one and the
        ``keep`` latest of the history; each is first renamed to a ``.trash-`` name (one atomic
        step), so a kill mid-removal never leaves a partial version under a version's name."""
        with self._locked():
            state = self.state()
            kept = set(state.history[-keep:]) if keep > 0 else set()
            kept |= {v for v in (state.current, self._previous(state)) if v is not None}
            removed = []
            for version in self.installed():
                if version in kept:
                    continue
                trash = self.dir / f"{TRASH_PREFIX}{os.urandom(8).hex()}"
                os.rename(self.dir / version, trash)
                fsync_directory(self.dir)
                remove_tree(trash)
                removed.append(version)
            if removed:
                state.history = [v for v in state.history if v not in removed]
                self._write_state(state)
            return removed

    def recover(self) -> list[str]:
        """Undo or finish what a killed operation left: remove staging dirs, temp links and
        trash; finish a switch the journal recorded but ``current`` does not show yet; rebuild
        a missing journal from ``current``. Returns the leftover names removed."""
        if not self.dir.exists():
            return []
        with self._locked():
            removed = []
            for entry in sorted(os.listdir(self.dir)):
                if entry.startswith(LEFTOVER_PREFIXES):
                    remove_tree(self.dir / entry)
                    removed.append(entry)
            if removed:
                fsync_directory(self.dir)
            state = self._read_state()
            on_disk = self.current()
            wanted = state.current if state is not None else None
            if wanted is not None and (self.dir / wanted).is_dir():
                if on_disk != wanted:
                    self._point_current(wanted)
            elif on_disk is not None:
                state = state or InstallState()
                state.history = [v for v in state.history if v != on_disk] + [on_disk]
                self._write_state(state)
            elif os.path.lexists(self.dirs.current):
                os.unlink(self.dirs.current)  # a link to nothing installed
                fsync_directory(self.dir)
            return removed

    # ------------------------------------------------------------------ inside the lock

    def _install(
        self,
        version: str,
        entries: list[tuple[str, Any]],
        expected: Mapping[str, str],
        executables: set[str],
        *,
        sizes: Mapping[str, int] | None,
        switch: bool,
        allow_bad: bool,
    ) -> Path:
        with self._locked():
            state = self.state()
            if version in state.bad and not allow_bad:
                raise VersionMarkedBad(
                    f"bundle {self.name} {version} was rolled back from; not installing it again"
                )
            target = self.dirs.version(version)
            if os.path.lexists(target):
                self._same_content(target, version, expected, executables)
            else:
                self._stage(target, version, entries, expected, executables, sizes=sizes or {})
            if switch:
                self._switch(version)
            return target

    def _same_content(
        self, target: Path, version: str, expected: Mapping[str, str], executables: set[str]
    ) -> None:
        try:
            record = verify_version(target)
        except (BundleFilesMismatch, FileHashMismatch, UnsafeBundlePath) as exc:
            raise VersionConflict(
                f"bundle {self.name} {version} is installed but broken: {exc}"
            ) from None
        if record["files"] != dict(expected) or set(record.get("executables", ())) != executables:
            raise VersionConflict(
                f"bundle {self.name} {version} is already installed with other files"
            )

    def _stage(
        self,
        target: Path,
        version: str,
        entries: list[tuple[str, Any]],
        expected: Mapping[str, str],
        executables: set[str],
        *,
        sizes: Mapping[str, int],
    ) -> None:
        staging = self.dir / f"{STAGING_PREFIX}{os.urandom(8).hex()}"
        staging.mkdir(mode=0o700)
        try:
            budget = [MAX_INSTALL_BYTES]
            for rel, chunks in entries:
                _stage_file(
                    staging, rel, chunks(), expected[rel], size=sizes.get(rel), budget=budget
                )
            record = {
                "format": FORMAT,
                "name": self.name,
                "version": version,
                "files": dict(sorted(expected.items())),
                "executables": sorted(executables),
            }
            write_atomic(staging / INSTALL_RECORD, json.dumps(record).encode(), 0o444)
            _seal(staging, executables)
            os.rename(staging, target)
            fsync_directory(self.dir)
        except BaseException:
            with contextlib.suppress(OSError):
                remove_tree(staging)
            raise

    def _switch(self, version: str) -> None:
        state = self.state()
        state.history = [v for v in state.history if v != version] + [version]
        state.history = state.history[-MAX_HISTORY:]
        state.bad.discard(version)
        self._write_state(state)  # the journal first: recover() finishes what it says
        self._point_current(version)

    def _point_current(self, version: str) -> None:
        temp = self.dir / f"{LINK_PREFIX}{os.urandom(8).hex()}"
        os.symlink(version, temp)
        os.replace(temp, self.dirs.current)
        fsync_directory(self.dir)

    def _previous(self, state: InstallState) -> str | None:
        current = state.current
        for version in reversed(state.history[:-1]):
            if version != current and version not in state.bad and (self.dir / version).is_dir():
                return version
        return None

    def _read_state(self) -> InstallState | None:
        try:
            return InstallState.from_bytes(read_bounded(self.dirs.state, MAX_STATE_BYTES))
        except (OSError, ValueError, UnsafeName, TypeError):
            return None

    def _write_state(self, state: InstallState) -> None:
        write_atomic(self.dirs.state, state.to_bytes(self.name), 0o644)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True, exist_ok=True)
            fsync_directory(self.dir.parent)
        fd = os.open(self.dirs.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InstallerBusy(
                    f"bundle {self.name} is being changed by another process"
                ) from None
            yield
        finally:
            os.close(fd)


def _read_chunks(path: Path) -> Iterator[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise UnsafeBundlePath(f"bundle file {path} is not a regular file")
        while chunk := handle.read(_CHUNK):
            yield chunk


def _stage_file(
    staging: Path,
    rel: str,
    chunks: Iterable[bytes],
    want: str,
    *,
    size: int | None,
    budget: list[int],
) -> None:
    """Write one file under ``staging``, hashing and counting as it goes; fsynced."""
    parts = check_relative_path(rel)
    parent = staging.joinpath(*parts[:-1])
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            parent / parts[-1],
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
    except (FileExistsError, NotADirectoryError):
        raise UnsafeBundlePath(f"bundle path {rel!r} clashes with another file's path") from None
    digest, written = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as handle:
        for chunk in chunks:
            budget[0] -= len(chunk)
            written += len(chunk)
            if budget[0] < 0:
                raise BundleTooLarge(f"bundle files are over {MAX_INSTALL_BYTES} bytes in all")
            if size is not None and written > size:
                raise BundleFilesMismatch(f"bundle file {rel!r} is longer than its {size} bytes")
            digest.update(chunk)
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    if size is not None and written != size:
        raise BundleFilesMismatch(f"bundle file {rel!r} has {written} bytes, not {size}")
    if digest.hexdigest() != want:
        raise FileHashMismatch(f"bundle file {rel!r} has sha256 {digest.hexdigest()}, not {want}")


def _seal(staging: Path, executables: set[str]) -> None:
    """Make the staged tree read-only (executables 0555, other files 0444, directories 0555)
    and fsync every directory, deepest first, so the rename publishes a durable tree."""
    for root, _dirs, files in os.walk(staging, topdown=False):
        base = Path(root)
        for name in files:
            rel = (base / name).relative_to(staging).as_posix()
            if rel != INSTALL_RECORD:
                os.chmod(base / name, 0o555 if rel in executables else 0o444)
        fsync_directory(base)
        os.chmod(base, 0o555)  # noqa: S103 - read-only, world-readable like an installed package

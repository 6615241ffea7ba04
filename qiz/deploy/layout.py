"""Where a bundle lives on disk, under a node's home::

    deploy/NAME/
        VERSION/            one directory per installed version, complete and read-only
            .qiz-install.json   the install record: every file's sha256 (see verify_version)
        current -> VERSION  the version that runs; switched by renaming a temp symlink over it
        state.json          the installer's journal: versions that were current, bad versions
        data/               the child's HOME, kept across versions
        logs/               the child's output, rotated by size
        .lock               held (flock) by whoever changes the directory
        .staging-*/ .current-* .trash-*   leftovers of an interrupted operation

Names that start with a dot are never versions, so a leftover can never be mistaken for an
installed version, and every version directory that exists was renamed into place whole.
Only the installer writes here (the supervisor writes logs/ and the child data/).
"""

from __future__ import annotations

import re
from pathlib import Path

from qiz.deploy.runtime_errors import UnsafeName
from qiz.deploy.runtime_limits import MAX_NAME_LENGTH

CURRENT = "current"
STATE = "state.json"
DATA = "data"
LOGS = "logs"
LOCK = ".lock"
INSTALL_RECORD = ".qiz-install.json"
STAGING_PREFIX = ".staging-"
LINK_PREFIX = ".current-"
TRASH_PREFIX = ".trash-"
LEFTOVER_PREFIXES = (STAGING_PREFIX, LINK_PREFIX, TRASH_PREFIX)
RESERVED = {CURRENT, STATE, DATA, LOGS}

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_name(text: str, what: str = "name") -> str:
    """``text`` if it is safe as one directory name (letters, digits, ``._+-``, not starting
    with a dot or dash, not a reserved name); :class:`UnsafeName` otherwise."""
    if (
        not isinstance(text, str)
        or len(text) > MAX_NAME_LENGTH
        or not _SAFE.fullmatch(text)
        or text in RESERVED
    ):
        raise UnsafeName(
            f"bundle {what} {text!r} is not usable as a directory name (letters, digits and ._+- "
            f"only, at most {MAX_NAME_LENGTH} characters, not {sorted(RESERVED)})"
        )
    return text


class BundleDirs:
    """The paths of one bundle's directory (no I/O)."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = check_name(name)
        self.root = Path(root)
        self.dir = self.root / self.name

    @property
    def current(self) -> Path:
        return self.dir / CURRENT

    @property
    def state(self) -> Path:
        return self.dir / STATE

    @property
    def data(self) -> Path:
        return self.dir / DATA

    @property
    def logs(self) -> Path:
        return self.dir / LOGS

    @property
    def lock(self) -> Path:
        return self.dir / LOCK

    def version(self, version: str) -> Path:
        return self.dir / check_name(version, "version")

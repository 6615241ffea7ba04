"""Every bound of the deploy runtime (the installer and the supervisor) in one place.

The installer takes bytes that came over the mesh (verified by TUF, but a publisher can still
be careless or hostile within its own signature), so each one is bounded before it is written;
the supervisor bounds what a child can leave on disk (its logs). Each ``MAX_*`` has a row in
docs/security.md.
"""

from __future__ import annotations

MAX_INSTALL_FILES = 10_000  # files in one installed version
MAX_INSTALL_BYTES = 1 << 30  # bytes of all the files of one installed version
MAX_INSTALL_PATH = 1024  # bytes of one file's relative path inside a bundle
MAX_INSTALL_DEPTH = 32  # directory levels of one file's relative path
MAX_NAME_LENGTH = 128  # a bundle name or version, which become directory names
MAX_STATE_BYTES = 256 * 1024  # the installer's state file, read back with this bound
MAX_HISTORY = 16  # versions remembered as having been current (what rollback walks back through)
MAX_LOG_BYTES = 1 << 20  # one log file of a supervised child before it is rotated
MAX_LOG_FILES = 5  # rotated log files kept per bundle (the live one not counted)

# rlimits applied when a bundle leaves one unset (None: no limit). CPU time is cumulative, so a
# long-running service gets no default CPU bound; memory and open files do.
DEFAULT_MEMORY_MB = 4096
DEFAULT_OPEN_FILES = 1024
DEFAULT_CPU_SECONDS: int | None = None

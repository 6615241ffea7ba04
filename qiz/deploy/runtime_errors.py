"""The deploy runtime's user-facing errors (installer and supervisor): one line each, the CLI
exit code and HTTP status implied by the class (see :class:`qiz.QizError`).

Kept apart from :mod:`qiz.deploy.errors` (the TUF layer's refusals) so the two halves of the
deploy engine grow without editing one file.
"""

from __future__ import annotations

from qiz import CheckFailed, NotFound, QizError


class DeployRuntimeError(QizError):
    """An install, switch, rollback or run could not be done as asked."""


class UnsafeName(DeployRuntimeError):
    """A bundle name or version that cannot safely become a directory name."""


class UnsafeBundlePath(DeployRuntimeError, CheckFailed):
    """A bundle file path that could escape the install directory (``..``, absolute, a symlink,
    a device or FIFO, a reserved name)."""


class BundleTooLarge(DeployRuntimeError, CheckFailed):
    """More files or bytes than :mod:`qiz.deploy.runtime_limits` allows."""


class FileHashMismatch(DeployRuntimeError, CheckFailed):
    """A file's sha256 is not the one the verified metadata expects."""


class BundleFilesMismatch(DeployRuntimeError, CheckFailed):
    """A file is missing from the bundle, or one is there that the metadata does not list."""


class VersionMarkedBad(DeployRuntimeError):
    """The version was rolled back from and is not installed again unless asked to."""


class VersionConflict(DeployRuntimeError, CheckFailed):
    """The version is already installed with different content (a version is immutable)."""


class VersionNotInstalled(DeployRuntimeError, NotFound):
    """No such version is installed."""


class NoPreviousVersion(DeployRuntimeError, NotFound):
    """A rollback was asked for but no earlier good version is installed."""


class InstallerBusy(DeployRuntimeError):
    """Another process holds the bundle's install lock."""

    http_status = 409

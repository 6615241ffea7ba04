"""The errors of the compute layer; each message is one sentence a user can act on."""

from __future__ import annotations

from qiz import CheckFailed, NotFound, QizError
from qiz.resolve.errors import Unreachable  # noqa: F401  (compute's callers catch it here)


class SpecError(QizError, ValueError):
    """A job spec was refused: malformed, unsigned, over a limit, or naming an unknown kind."""


class CheckerBusy(QizError, RuntimeError):
    """Too many spec checks wait for the limited checker process; the same spec may be offered
    again later (a worker answers ``busy``)."""

    http_status = 503


class JobError(QizError, RuntimeError):
    """A job cannot be submitted, found, or completed; the message says why."""


class JobNotFound(NotFound, JobError):
    """No job with that id (or prefix) was submitted to this node."""


class TaskFailed(RuntimeError):
    """A task ran and failed in a worker process (its error, or the process died)."""


class TaskCancelled(RuntimeError):
    """A task was cancelled before it finished."""


class AttestationError(CheckFailed, ValueError):
    """An attestation does not verify; the message names the first check that failed."""


class NotAnAttestation(AttestationError):
    """The bytes are not an attestation file at all (not its container format): a wrong file,
    a user error, rather than an attestation that failed its checks."""

    exit_code = 2


class NotAStoredResult(QizError, ValueError):
    """Content fetched as a stored job result holds no attestation file: the wrong id was
    given (a user error, not a failed check)."""

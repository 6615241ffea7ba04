"""QIZ: Quantum Infrastructure Zero.

A zero-infrastructure, post-quantum-secure peer-to-peer mesh whose nodes run
quantum-algorithm workloads for each other. See README.md for the tour.
"""

__version__ = "0.1.0"


class QizError(Exception):
    """The root of every error a user (or a peer's input reaching a user) can cause.

    Its message is one sentence a person can act on, printed as is by every face. Each face maps
    it the same way, from the class alone: ``exit_code`` for the CLI (2: the command could not
    run as asked; 1: a check ran and said no), ``http_status`` for the HTTP API and the control
    socket. Subclasses override the two numbers; nothing else keeps a table of error types.

    It lives in the package root because every layer, the pure ``crypto`` and ``wire`` included,
    raises user errors, and the root is the one module they all already load.
    """

    exit_code = 2
    http_status = 400


class NotFound(QizError):
    """What was asked for does not exist here (a job id, a record)."""

    http_status = 404


class CheckFailed(QizError):
    """A verification ran and said no (a bad signature, a forged record, a tampered file)."""

    exit_code = 1
    http_status = 422

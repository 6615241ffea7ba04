"""The targets layer's one error: a target that cannot be found, read or used as asked.

A ``QuantumError`` (so a ``QizError``): the CLI prints it as one line.
"""

from __future__ import annotations

from qiz.quantum.core.errors import QuantumError


class TargetError(QuantumError):
    """A target is unknown, its file invalid, or a circuit cannot run on it; says why."""

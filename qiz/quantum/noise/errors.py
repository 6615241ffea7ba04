"""The noise layer's one error: a channel, noise model or noise file that cannot be used as given.

A subclass of ``QuantumError`` (so of ``QizError``): the CLI and job code already print those as
one line, and a caller catching the quantum processor's errors catches these too.
"""

from __future__ import annotations

from qiz.quantum.core.errors import QuantumError


class NoiseError(QuantumError):
    """A noise channel, readout error, noise model or noise file is invalid; says which and why."""

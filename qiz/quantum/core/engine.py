"""The simulator's name and version, recorded with every result: a module of its own so that
code which only names the engine (job specs, attestations, the CLI) does not load numba."""

ENGINE_NAME = "qiz-statevector"
ENGINE_VERSION = "1"

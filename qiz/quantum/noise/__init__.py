"""Noise for the gate-level engine: Kraus channels, noise models, and two noisy simulators.

One job per module, importing only downwards (of the rest of qiz.quantum only ``core`` and the
numba kernel in ``kernels/noise.py``)::

    errors        NoiseError, the one-line refusal
    limits        the caps (each a row in docs/security.md)
    channels      Kraus channels (depolarizing, amplitude/phase damping, thermal relaxation,
                  explicit Kraus) and readout errors, validated when made
    model         NoiseModel: which channel after which gate on which qubits, its JSON file
    plan          a circuit and a model turned into the steps the simulators run
    tensor        a small matrix on some qubits of a batch of vectors (numpy)
    trajectories  sampling by quantum trajectories on state vectors, shots sharing states
    density       the exact density-matrix simulator for small registers
    sampler       ``sample(circuit, noise, shots, seed)``: the Sampler's call with noise
    aer_import    a Qiskit Aer NoiseModel (or a backend's) as ours; qiskit loaded only there

docs/noise.md describes the semantics, the file format and the statistics of the tests.
"""

"""Device targets: a device's basis gates, coupling map and calibrated noise, and runs on them.

A target is what a researcher needs to run a circuit "as the device would" before spending
hardware time: the circuit is transpiled to the device's gates and connectivity (by Qiskit's
transpiler when qiskit is installed; without it only a circuit that already fits runs), then
simulated with the device's noise through ``qiz.quantum.noise``, on only the qubits it uses.
A few targets ship as data (``qiz/quantum/data/targets/*.json``), derived from the fake
backends of ``qiskit-ibm-runtime`` by ``bench/gen_targets.py``, so none of this needs qiskit.

One job per module, importing only downwards (``noise`` and ``core`` of ``qiz.quantum``)::

    errors       TargetError, the one-line refusal
    device       Target: the calibration and its JSON file format (``qiz-target/1``)
    catalog      the shipped targets, and loading one by name or path
    noise        a target's noise model on some of its qubits, by Aer's ``from_backend`` recipe
    lowering     a device circuit (physical qubits, basis gates) as an engine circuit on a
                 compact register; ``ecr`` as engine gates with its noise placed exactly
    transpile    a circuit to a target: Qiskit's preset pass manager, or a check that it fits
    compare      the ideal outcome distribution, TVD and classical fidelity against counts
    run          ``run(circuit, target, shots, seed)``: transpile, lower, simulate, compare
    from_backend a qiskit BackendV2's calibration as a Target (for the generator and tests;
                 qiskit loaded only there)

docs/targets.md describes the file format, the noise recipe and the CLI.
"""

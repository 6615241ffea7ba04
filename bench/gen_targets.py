"""Write the shipped device targets (qiz/quantum/data/targets/*.json) from qiskit-ibm-runtime's
fake backends, and check each against the noise model the fake backend itself simulates with.

qiskit-ibm-runtime is not a qiz dependency, so this runs in a throwaway venv::

    python3 -m venv /tmp/genvenv
    /tmp/genvenv/bin/pip install -c constraints.txt qiskit-ibm-runtime qiskit-aer
    PYTHONPATH=. /tmp/genvenv/bin/python -m bench.gen_targets [NAME ...]

Each file records the backend's name, the date of its calibration snapshot (the fake backend's
``properties().last_update_date``) and the package version it came from. The check rebuilds the
noise model from the written file (``qiz.quantum.targets.noise``) and compares every channel's
superoperator, and every readout error, within 1e-9 with the model the fake backend runs with
(``_get_noise_model_from_backend_v2``: Aer's recipe over its BackendProperties; imported by
``qiz.quantum.noise``), so ``SamplerV2`` on the fake backend and ``qiz run --target`` simulate
the same noise.
"""

from __future__ import annotations

import sys

from qiz.quantum.targets.catalog import DATA_DIR
from qiz.quantum.targets.device import Target
from qiz.quantum.targets.from_backend import differences_from_aer, from_backend

BACKENDS = {  # our name -> the fake backend class in qiskit_ibm_runtime.fake_provider
    "fake_manila": "FakeManilaV2",
    "fake_sherbrooke": "FakeSherbrooke",
    "fake_kyiv": "FakeKyiv",
    "fake_torino": "FakeTorino",
}
DESCRIPTIONS = {
    "fake_manila": "IBM Falcon r5.11L, 5 qubits in a line, CX",
    "fake_sherbrooke": "IBM Eagle r3, 127 qubits heavy-hex, ECR",
    "fake_kyiv": "IBM Eagle r3, 127 qubits heavy-hex, ECR",
    "fake_torino": "IBM Heron r1, 133 qubits heavy-hex, CZ",
}
TOLERANCE = 1e-9


def generate(name: str) -> Target:
    import qiskit_ibm_runtime
    from qiskit_ibm_runtime import fake_provider

    backend = getattr(fake_provider, BACKENDS[name])()
    date = backend.properties().last_update_date
    source = {
        "backend": str(backend.name),
        "snapshot_date": date.isoformat() if hasattr(date, "isoformat") else str(date),
        "package": f"qiskit-ibm-runtime {qiskit_ibm_runtime.__version__}",
        "generator": "bench/gen_targets.py",
    }
    target = from_backend(backend, name, source)
    target = Target(**{**target.__dict__, "description": DESCRIPTIONS.get(name, "")})
    path = DATA_DIR / f"{name}.json"
    path.write_text(target.dumps())
    check(Target.load(path), backend)
    size = path.stat().st_size
    print(f"{path}: {target.num_qubits} qubits, {size} bytes, checked against the backend's noise")
    return target


def check(target: Target, backend: object) -> None:
    """Stop unless the model rebuilt from ``target`` equals the one the fake backend simulates
    with (its ``_get_noise_model_from_backend_v2``: Aer's recipe over its BackendProperties,
    which is what ``SamplerV2`` in local mode runs)."""
    problems = differences_from_aer(target, backend._get_noise_model_from_backend_v2(), TOLERANCE)
    if problems:
        raise SystemExit(f"{target.name}: " + "; ".join(problems[:5]))


def main(argv: list[str]) -> int:
    for name in argv or list(BACKENDS):
        generate(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

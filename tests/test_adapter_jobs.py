"""Provider adapters in jobs (qiz/compute/devices.py, ``adapter``): a sampler job may have a
provider's SDK run its circuit offline (Braket's LocalSimulator; qiskit-ibm-runtime's SamplerV2
on a fake backend); the check names every bad field, placement needs the adapter's SDK, the
replicas are compared statistically, and on a loopback mesh of two ``qiz node start``
processes an unseeded Braket job runs on both and is accepted by the chi-square quorum."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from qiz.compute import devices
from qiz.compute import spec as specs
from qiz.compute.errors import SpecError
from qiz.compute.quorum import CHI2
from qiz.identity import NodeIdentity
from qiz.quantum import qasm

from .helpers import eventually, node_processes, node_state, qiz_init

pytest.importorskip("braket.devices", reason="needs the braket extra (amazon-braket-sdk)")
pytest.importorskip("qiskit_ibm_runtime", reason="needs the ibm extra (qiskit-ibm-runtime)")

BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
    "h q[0]; cx q[0], q[1]; c = measure q;"
)
DELTA = 1e-6


def signed(doc: dict, who: NodeIdentity) -> bytes:
    return specs.sign(specs.make_body(doc, who), who)


def sampler(extra: dict, seed: int | None = 7, qasm_text: str = BELL) -> dict:
    return {"kind": "sampler", "params": {"qasm": qasm_text, "shots": 2000, **extra}, "seed": seed}


def eps(shots: int, bits: int, delta: float = DELTA) -> float:
    """TVD bound of ``shots`` draws over 2^bits outcomes (docs/noise.md, the statistics)."""
    return math.sqrt((2**bits * math.log(2) + math.log(1 / delta)) / (2 * shots))


def tvd(a: dict[str, int], b: dict[str, int]) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"adapter": "ionq"}, r"params.adapter: must be one of braket, ibm"),
        ({"adapter": 3}, r"params.adapter: must be one of"),
        ({"adapter": "braket", "target": "fake_manila"}, r"params.target: braket's local"),
        ({"adapter": "ibm"}, r"params.target: the ibm adapter runs a fake backend by name"),
        ({"adapter": "ibm", "target": "fake_mars"}, r"params.target: the ibm adapter"),
        ({"adapter": "braket", "transpile": "none"}, r"params.transpile: an adapter's SDK"),
        ({"adapter": "ibm", "target": "fake_manila", "transpile_seed": 1}, r"transpile_seed"),
    ],
)
def test_bad_adapter_fields_are_refused_by_name(alice, extra: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        specs.parse(signed(sampler(extra), alice))


def test_a_circuit_wider_than_the_fake_backend_is_refused(alice) -> None:
    wide = "OPENQASM 3.0; qubit[6] q; bit[6] c; x q[5]; c = measure q;"
    with pytest.raises(SpecError, match="the circuit has 6 qubits; fake_manila has 5"):
        specs.parse(signed(sampler({"adapter": "ibm", "target": "fake_manila"}, 1, wide), alice))


def test_adapter_jobs_need_the_sdk_and_are_decided_statistically(alice) -> None:
    braket_job = specs.parse(signed(sampler({"adapter": "braket"}), alice))
    assert devices.needs(braket_job) == {"adapter:braket"}
    assert devices.statistical(braket_job)  # seeded, yet another engine's sampler
    ibm_job = specs.parse(signed(sampler({"adapter": "ibm", "target": "fake_manila"}), alice))
    assert devices.needs(ibm_job) == {"adapter:ibm"}
    assert "the ibm adapter's SDK" in devices.describe(devices.needs(ibm_job))
    # a circuits entry takes the field too
    doc = {"kind": "circuits", "params": {"circuits": [{"qasm": BELL, "adapter": "braket"}]}}
    assert devices.needs(specs.parse(signed({**doc, "seed": 1}, alice))) == {"adapter:braket"}


def test_each_adapter_samples_what_the_circuit_gives() -> None:
    from qiz.quantum.targets import catalog
    from qiz.quantum.targets.run import run as run_on_target

    circuit = qasm.loads(BELL)
    shots = 4000
    braket = devices.run_adapter({"adapter": "braket", "shots": shots}, circuit, None)
    assert braket["shots"] == shots and set(braket["counts"]) == {"00", "11"}
    assert tvd(braket["counts"], {"00": 1, "11": 1}) <= eps(shots, 2)
    fake = {"adapter": "ibm", "target": "fake_manila", "shots": shots}
    ibm = devices.run_adapter(fake, circuit, 3)
    assert sum(ibm["counts"].values()) == shots
    # fake_manila's noise through IBM's own sampler and through our target agree
    ours = run_on_target(circuit, catalog.load("fake_manila"), shots, 3).result.counts
    assert tvd(ibm["counts"], dict(ours)) <= 2 * eps(shots, 2, DELTA / 2)


def test_an_unseeded_braket_job_runs_on_two_workers(tmp_path: Path) -> None:
    from qiz.client import Mesh

    qiz_init(tmp_path, "A", "B")
    with node_processes(tmp_path) as start:
        a = start("A", args=["--slots", "1"])
        start("B", [a.bootstrap], args=["--slots", "1"])
        eventually(lambda: (node_state(a) or {}).get("dht", {}).get("contacts", 0) >= 1, 60, "B")
        assert "braket" in (node_state(a) or {})["compute"]["worker"]["adapters"]
        doc = {"kind": "sampler", "params": {"qasm": BELL, "shots": 3000, "adapter": "braket"}}
        result = Mesh(tmp_path / "A").submit(doc, replicas=2).result(timeout=150)
    assert result.attestation.tests == (CHI2,) and len(set(result.attestation.workers)) == 2
    counts = result.value["counts"]
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 3000

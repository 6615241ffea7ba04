"""``MeshSamplerV2``/``MeshEstimatorV2`` with ``local=True`` against Qiskit's reference
primitives (``StatevectorSampler``, ``StatevectorEstimator``), following the ideas of Qiskit's
own primitive tests: result shapes under broadcasting, shots per run and per PUB, seeds,
several classical registers, circuits without measurements, statistics within error, and the
same errors for bad PUBs. The mesh runs of the same classes are in tests/test_client.py."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

qiskit = pytest.importorskip("qiskit")

from qiskit.circuit import (  # noqa: E402 - after the skip
    ClassicalRegister,
    Gate,
    Parameter,
    QuantumCircuit,
    QuantumRegister,
)
from qiskit.circuit.library import efficient_su2  # noqa: E402
from qiskit.primitives import StatevectorEstimator, StatevectorSampler  # noqa: E402
from qiskit.quantum_info import SparsePauliOp, Statevector  # noqa: E402

from qiz import QizError  # noqa: E402
from qiz.integrations.qiskit import MeshEstimatorV2, MeshSamplerV2  # noqa: E402
from qiz.quantum import CircuitError  # noqa: E402


def sampler(**options: object) -> MeshSamplerV2:
    return MeshSamplerV2(local=True, **options)  # type: ignore[arg-type]


def estimator(**options: object) -> MeshEstimatorV2:
    return MeshEstimatorV2(local=True, **options)  # type: ignore[arg-type]


def two_parameter_circuit() -> QuantumCircuit:
    a, b = Parameter("a"), Parameter("b")
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.ry(a, 1)
    qc.cx(0, 2)
    qc.crz(2 * b - 0.4, 1, 2)
    qc.rxx(a + b, 0, 1)
    return qc


# ----------------------------------------------------------------------------- sampler


@pytest.mark.parametrize(
    "values, shape",
    [
        (None, ()),
        ([0.3, 0.9], ()),
        ([[0.3, 0.9], [1.0, 2.0], [0.0, 0.1]], (3,)),
        (np.zeros((2, 4, 2)), (2, 4)),
        (np.ones((1, 1, 2)), (1, 1)),
    ],
)
def test_sampler_shapes_follow_the_parameter_values(values: object, shape: tuple) -> None:
    qc = two_parameter_circuit().measure_all(inplace=False)
    if values is None:
        qc = qc.assign_parameters([0.5, 0.5])
    pub = (qc,) if values is None else (qc, values)
    ours = sampler(seed=1).run([pub], shots=20).result()[0]
    reference = StatevectorSampler(seed=1).run([pub], shots=20).result()[0]
    assert ours.data.meas.shape == reference.data.meas.shape == shape
    assert ours.data.meas.num_shots == 20 and ours.data.meas.num_bits == 3
    assert ours.metadata["shots"] == 20 and ours.metadata["local"] is True


def test_sampler_shots_by_default_by_run_and_by_pub() -> None:
    qc = QuantumCircuit(1, 1)
    qc.h(0)
    qc.measure(0, 0)
    prim = sampler(default_shots=33)
    assert prim.default_shots == 33
    results = prim.run([qc, (qc, None, 7)]).result()
    assert [r.data.c.num_shots for r in results] == [33, 7]
    assert prim.run([qc], shots=5).result()[0].data.c.num_shots == 5
    with pytest.raises(ValueError, match="shots must be positive"):
        prim.run([qc], shots=-1)


def test_sampler_frequencies_agree_with_the_exact_distribution() -> None:
    """At every broadcast point, every outcome's frequency within 5 sigma of its exact
    probability, as the reference's are."""
    qc = two_parameter_circuit()
    values = np.random.default_rng(4).uniform(-np.pi, np.pi, (2, 3, 2))
    shots = 4000
    result = sampler(seed=9).run([(qc.measure_all(inplace=False), values, shots)]).result()[0]
    for index in np.ndindex(2, 3):
        exact = Statevector(qc.assign_parameters(values[index])).probabilities_dict()
        counts = result.data.meas.get_counts(loc=index)
        assert sum(counts.values()) == shots
        for key, p in exact.items():
            sigma = max(np.sqrt(p * (1 - p) / shots), 1 / shots)
            assert abs(counts.get(key, 0) / shots - p) <= 5 * sigma


def test_seeds_repeat_and_differ_as_the_references_do() -> None:
    qc = QuantumCircuit(4)
    qc.h(range(4))
    qc.measure_all()

    def bits(prim: MeshSamplerV2) -> list[str]:
        return prim.run([qc], shots=200).result()[0].data.meas.get_bitstrings()

    assert bits(sampler(seed=5)) == bits(sampler(seed=5))
    assert bits(sampler(seed=5)) != bits(sampler(seed=6))
    generator = np.random.default_rng(3)
    prim = sampler(seed=generator)
    assert prim.seed is generator
    assert bits(prim) != bits(prim)  # a Generator draws a seed per run
    # an integer seed samples every point alike (as StatevectorSampler): same state, same shots
    theta = Parameter("t")
    pqc = QuantumCircuit(1)
    pqc.rx(theta, 0)
    pqc.measure_all()
    same = sampler(seed=8).run([(pqc, [[1.0], [1.0]])], shots=50).result()[0].data.meas
    assert same.get_bitstrings(loc=0) == same.get_bitstrings(loc=1)


def test_several_registers_and_unmeasured_bits() -> None:
    qr = QuantumRegister(3, "q")
    alpha, beta = ClassicalRegister(2, "alpha"), ClassicalRegister(3, "beta")
    qc = QuantumCircuit(qr, alpha, beta)
    qc.x(0)
    qc.x(2)
    qc.measure(0, alpha[1])
    qc.measure(1, alpha[0])
    qc.measure(2, beta[2])  # beta[0], beta[1] never measured: they read 0
    ours = sampler().run([qc], shots=10).result()[0]
    reference = StatevectorSampler().run([qc], shots=10).result()[0]
    for name in ("alpha", "beta"):
        assert ours.data[name].get_counts() == reference.data[name].get_counts()
    assert ours.data.alpha.get_counts() == {"10": 10}
    assert ours.data.beta.get_counts() == {"100": 10}
    assert ours.join_data().get_counts() == {"10010": 10}


def test_a_circuit_without_registers_warns_and_gives_no_data() -> None:
    qc = QuantumCircuit(2)
    qc.h(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sampler().run([qc]).result()[0]
    assert any("no output classical registers" in str(w.message) for w in caught)
    assert len(result.data) == 0


def test_bad_sampler_pubs_fail_as_in_the_reference() -> None:
    qc = two_parameter_circuit().measure_all(inplace=False)
    for pub in [(qc, [0.1]), (qc, [[0.1, 0.2, 0.3]]), (qc,), (qc, [0.1, 0.2], 0)]:
        with pytest.raises(ValueError) as ours:
            sampler().run([pub])
        with pytest.raises(ValueError) as reference:
            StatevectorSampler().run([pub])
        assert str(ours.value) == str(reference.value)


# ----------------------------------------------------------------------------- estimator


def test_estimator_broadcasts_and_equals_the_reference() -> None:
    qc = two_parameter_circuit()
    observables = [
        [SparsePauliOp.from_list([("ZZI", 1.0), ("IXX", -0.5)])],
        [SparsePauliOp("YIY")],
        [{"XIZ": 0.25, "III": 1.0}],
    ]  # (3, 1)
    values = np.random.default_rng(2).uniform(-3, 3, (4, 2))  # (4,)
    pubs = [
        (qc, observables, values),
        (qc, "ZZZ", values[0]),
        (qc, [["IIZ", "ZII"]], values[:, None]),
    ]
    ours = estimator().run(pubs).result()
    reference = StatevectorEstimator().run(pubs).result()
    assert [r.data.evs.shape for r in ours] == [(3, 4), (), (4, 2)]
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.data.evs.shape == theirs.data.evs.shape == mine.data.stds.shape
        assert np.allclose(mine.data.evs, theirs.data.evs, atol=1e-10)
        assert np.all(mine.data.stds == 0.0) and mine.metadata["target_precision"] == 0.0


def test_estimator_with_a_library_circuit() -> None:
    qc = efficient_su2(4, reps=2)
    values = np.random.default_rng(1).uniform(-1, 1, qc.num_parameters)
    obs = SparsePauliOp.from_list([("ZZII", 1.0), ("IXYI", 0.3), ("YIIZ", -0.7)])
    ours = estimator().run([(qc, obs, values)]).result()[0].data.evs
    reference = StatevectorEstimator().run([(qc, obs, values)]).result()[0].data.evs
    assert ours == pytest.approx(reference, abs=1e-10)


def test_estimator_precision_adds_noise_of_that_size_reproducibly() -> None:
    qc = QuantumCircuit(1)
    qc.h(0)
    pub = (qc, [["X"] * 2000])
    first = estimator(seed=4).run([pub], precision=0.05).result()[0]
    again = estimator(seed=4).run([pub], precision=0.05).result()[0]
    assert np.array_equal(first.data.evs, again.data.evs)
    assert abs(np.mean(first.data.evs) - 1.0) < 5 * 0.05 / np.sqrt(2000)
    assert np.std(first.data.evs) == pytest.approx(0.05, rel=0.1)
    assert np.all(first.data.stds == 0.05) and first.metadata["target_precision"] == 0.05
    assert estimator(default_precision=0.1).default_precision == 0.1


def test_bad_estimator_pubs_fail_as_in_the_reference() -> None:
    qc = two_parameter_circuit()
    for pub in [
        (qc, "ZZ", [0.1, 0.2]),
        (qc, "ZZZ", [0.1]),
        (qc, [["ZZZ"]] * 2, np.ones((3, 1, 2))),
    ]:
        with pytest.raises(ValueError) as ours:
            estimator().run([pub])
        with pytest.raises(ValueError) as reference:
            StatevectorEstimator().run([pub])
        assert str(ours.value) == str(reference.value)


# ----------------------------------------------------------------------------- refusals


def test_what_the_engine_cannot_run_is_refused_by_name_at_run() -> None:
    opaque = QuantumCircuit(2)
    opaque.append(Gate("mystery", 2, []), [0, 1])
    opaque.measure_all()
    with pytest.raises(CircuitError, match=r"Qiskit instruction 'mystery' has no definition"):
        sampler().run([opaque])
    flow = QuantumCircuit(1, 1)
    flow.h(0)
    flow.measure(0, 0)
    with flow.if_test((flow.clbits[0], 1)):
        flow.x(0)
    with pytest.raises(CircuitError, match=r"'if_else' \(classical control flow\)"):
        sampler().run([flow])
    t = Parameter("t")
    square = QuantumCircuit(1)
    square.rx(t * t, 0)
    with pytest.raises(CircuitError, match=r"rx: angle .* is not affine"):
        estimator().run([(square, "Z", [0.1])])
    inverse = QuantumCircuit(1)
    inverse.ry(1 / t, 0)
    with pytest.raises(CircuitError, match=r"ry: angle 1/t is not affine"):
        estimator().run([(inverse, "Z", [0.1])])
    mid = QuantumCircuit(1, 1)
    mid.measure(0, 0)
    mid.h(0)
    with pytest.raises(CircuitError, match="mid-circuit measurement"):
        estimator().run([(mid, "Z")])


def test_a_mesh_primitive_needs_a_mesh_or_local() -> None:
    with pytest.raises(QizError, match=r"pass qiz.client.Mesh\(\).*or local=True"):
        MeshSamplerV2()
    with pytest.raises(QizError, match="not both"):
        MeshEstimatorV2(object(), local=True)  # type: ignore[arg-type]


def test_without_qiskit_the_bridge_says_so_and_the_rest_loads() -> None:
    """Qiskit blocked from import in a fresh interpreter: the bridge raises an ImportError that
    is a QizError naming what to install; qiz.client and the engine's primitives still load,
    and the primitives say what they take."""
    probe = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'qiskit' or name.startswith('qiskit.'):\n"
        "            raise ImportError(f'No module named {name!r} (blocked)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import qiz.client\n"
        "from qiz.quantum.core.primitives import Sampler\n"
        "from qiz import QizError\n"
        "try:\n"
        "    Sampler().run(object())\n"
        "except QizError as exc:\n"
        "    print('sampler:', exc)\n"
        "try:\n"
        "    import qiz.integrations.qiskit\n"
        "except ImportError as exc:\n"
        "    print('bridge:', isinstance(exc, QizError), exc)\n"
        "print('qiskit loaded:', any(m.startswith('qiskit') for m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "sampler: Sampler.run takes a qiz Circuit, or a Qiskit QuantumCircuit" in out
    assert "pip install qiskit" in out
    assert "bridge: True qiz.integrations.qiskit needs Qiskit 2" in out
    assert "pip install 'qiskit>=2.0'" in out
    assert "qiskit loaded: False" in out


def test_a_pubs_points_become_as_few_mesh_jobs_as_they_allow() -> None:
    """The mesh plan (no node needed): one job without inputs, one sweep over a grid, a grid
    too large for one sweep split along its first axis, scattered points a job each; every row
    answered exactly once, in the sweep's own order (sorted paths, the last varying fastest)."""
    from qiz.integrations.qiskit import plan

    base = {"qasm": "...", "shots": 10}
    assert plan("sampler", base, [], [(), ()], max_points=4096, shard=8) == [
        ({"kind": "sampler", "params": base}, [()])
    ]
    grid = [(a, b) for b in (0.5, 0.25) for a in (1.0, 2.0, 3.0)]  # rows in any order
    [(spec, order)] = plan("sampler", base, ["p0", "p1"], grid, max_points=4096, shard=2)
    assert spec["kind"] == "sweep" and spec["params"]["shard"] == 2
    assert spec["params"]["axes"] == {"inputs.p0": [1.0, 2.0, 3.0], "inputs.p1": [0.5, 0.25]}
    assert spec["params"]["base"]["inputs"] == {"p0": 1.0, "p1": 0.5}
    assert order == [(1.0, 0.5), (1.0, 0.25), (2.0, 0.5), (2.0, 0.25), (3.0, 0.5), (3.0, 0.25)]
    split = plan("estimator", base, ["p0", "p1"], grid, max_points=4, shard=8)
    assert [s["params"]["axes"]["inputs.p0"] for s, _ in split] == [[1.0, 2.0], [3.0]]
    assert sorted(row for _, order in split for row in order) == sorted(grid)
    names = [f"p{i}" for i in range(11)]  # p10 sorts before p2: the sweep's order, not ours
    rows = [tuple(float(i == j) for j in range(11)) for i in range(2)]
    scattered = plan("sampler", base, names, [*rows, rows[0]], max_points=4096, shard=8)
    assert [order for _, order in scattered] == [[rows[0]], [rows[1]]]
    assert scattered[1][0]["params"]["inputs"]["p1"] == 1.0
    wide = [(float(a), float(b)) for a in range(3) for b in range(3)]
    assert [
        len(o) for _, o in plan("sampler", base, ["p2", "p10"], wide, max_points=3, shard=1)
    ] == [3] * 3
    assert len(plan("sampler", base, ["p2", "p10"], wide, max_points=2, shard=1)) == 9

"""OpenQASM 3 classical control: the classical evaluator, the refusals, the limits, and dynamic
circuits sampled shot-batched, checked against Qiskit Aer within statistical error.

Statistical comparisons are two-sample chi-square tests of homogeneity (outcomes seen fewer
than 10 times in both samples pooled into one bin); a comparison fails when p < 1e-6, so a
correct simulator fails one in a million runs at most. The runs are seeded, so a given version
of the code passes or fails deterministically; ``test_the_comparison_can_fail`` shows the test
rejects a wrong distribution of the same size.
"""

from __future__ import annotations

import math
import operator
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2_contingency

from qiz.compute import execute
from qiz.compute.errors import SpecError
from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.errors import CircuitError, QasmError
from qiz.quantum.core.pauli import PauliSum
from qiz.quantum.core.primitives import Estimator, Sampler
from qiz.quantum.qasm import DynamicProgram, QasmLimits, loads
from qiz.quantum.qasm import classical as cl

HEADER = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'
P_MIN = 1e-6

# -- the classical evaluator -------------------------------------------------------------------


def _wrap_signed(x: int, n: int) -> int:
    x %= 1 << n
    return x - (1 << n) if x >= 1 << (n - 1) else x


widths = st.integers(1, 70)


@settings(max_examples=300, deadline=None)
@given(widths, st.integers(-(2**80), 2**80), st.integers(-(2**80), 2**80), st.sampled_from("+-*"))
def test_sized_integers_wrap_like_twos_complement(n, a, b, op):
    x, y = cl.make(cl.CType("int", n), a), cl.make(cl.CType("int", n), b)
    assert x.value == _wrap_signed(a, n)
    result = cl.binary(op, x, y)
    ref = {"+": x.value + y.value, "-": x.value - y.value, "*": x.value * y.value}[op]
    assert result.type == cl.CType("int", n) and result.value == _wrap_signed(ref, n)
    u = cl.binary(op, cl.make(cl.CType("uint", n), a), cl.make(cl.CType("uint", n), b))
    assert u.value == {"+": a + b, "-": a - b, "*": a * b}[op] % (1 << n)


@settings(max_examples=300, deadline=None)
@given(widths, st.integers(-(2**70), 2**70), st.integers(-(2**70), 2**70))
def test_integer_division_truncates_toward_zero_and_bit_operators_match_python(n, a, b):
    x, y = cl.make(cl.CType("int", n), a), cl.make(cl.CType("int", n), b)
    if y.value == 0:
        with pytest.raises(cl.ClassicalError, match="division by zero"):
            cl.binary("/", x, y)
    else:
        quotient = int(Fraction(x.value, y.value))  # int() of a Fraction truncates toward zero
        assert cl.binary("/", x, y).value == _wrap_signed(quotient, n)
        assert cl.binary("%", x, y).value == _wrap_signed(x.value - quotient * y.value, n)
    for op, ref in (("&", x.value & y.value), ("|", x.value | y.value), ("^", x.value ^ y.value)):
        assert cl.binary(op, x, y).value == _wrap_signed(ref, n)
    assert cl.unary("~", x).value == _wrap_signed(~x.value, n)
    shift = abs(b) % (n + 3)
    assert cl.binary("<<", x, cl.make(cl.INT, shift)).value == _wrap_signed(x.value << shift, n)
    assert cl.binary(">>", x, cl.make(cl.INT, shift)).value == x.value >> shift
    for op, ref in (("<", operator.lt), ("<=", operator.le), (">", operator.gt),
                    (">=", operator.ge), ("==", operator.eq), ("!=", operator.ne)):  # fmt: skip
        assert cl.binary(op, x, y).value == ref(x.value, y.value)


@settings(max_examples=300, deadline=None)
@given(
    widths,
    st.floats(-1e30, 1e30, allow_nan=False),
    st.integers(-(2**70), 2**70),
    st.integers(1, 64),
)
def test_casts_between_types(n, f, i, m):
    assert cl.cast(cl.make(cl.FLOAT, f), cl.CType("int", n)).value == _wrap_signed(int(f), n)
    assert cl.cast(cl.make(cl.FLOAT, f), cl.BOOL).value == (f != 0)
    assert cl.cast(cl.make(cl.INT, i), cl.FLOAT).value == float(_wrap_signed(i, 64))
    bits = cl.make(cl.CType("bit", n), i)
    assert bits.value == i % (1 << n)
    assert cl.cast(bits, cl.CType("uint", n)).value == bits.value
    assert cl.cast(bits, cl.CType("int", n)).value == _wrap_signed(bits.value, n)
    for k in range(n):
        assert cl.get_bit(bits, k).value == (bits.value >> k) & 1
    flipped = cl.set_bit(bits, n - 1, cl.make(cl.BIT, 1 - cl.get_bit(bits, n - 1).value))
    assert flipped.value == bits.value ^ (1 << (n - 1))
    # angle[m] <-> bit[m] round-trips, and angles add modulo 2 pi
    raw = cl.make(cl.CType("bit", m), i)
    angle = cl.cast(raw, cl.CType("angle", m))
    assert math.isclose(float(angle), raw.value * 2 * math.pi / (1 << m), abs_tol=1e-12)
    assert cl.cast(angle, cl.CType("bit", m)).value == raw.value
    twice = cl.binary("+", angle, angle)
    assert cl.cast(twice, cl.CType("bit", m)).value == (2 * raw.value) % (1 << m)


BINOPS = ["+", "-", "*", "&", "|", "^", "<<", ">>", "/", "%"]


@settings(max_examples=25, deadline=None)
@given(st.integers(-128, 127), st.integers(-128, 127), st.sampled_from(BINOPS))
def test_programs_compute_like_the_reference(a, b, op):
    """The evaluator as a program uses it: int[8] arithmetic, written to output bits."""
    if op in ("/", "%") and b == 0:
        return
    if op in ("<<", ">>"):
        b = abs(b) % 9
    text = HEADER + (
        f"qubit q;\nbit[8] out;\nint[8] a = {a};\nint[8] b = {b};\nint[8] r = a {op} b;\nout = r;\n"
    )
    program = loads(text)
    assert isinstance(program, DynamicProgram)  # output bits written by the program
    expected = cl.binary(op, cl.make(cl.CType("int", 8), a), cl.make(cl.CType("int", 8), b))
    (key,) = Sampler().run(program, shots=1, seed=0).counts
    assert int(key, 2) == expected.value % 256


# -- what is refused, and where ----------------------------------------------------------------

BAD = [
    ("qubit q;\nswitch (1) { case 1 { x q; } }", 4, 1, "switch is not supported"),
    ("qubit q;\nif (true) { qubit r; }", 4, 13, "qubit declarations must be global"),
    ("qubit q;\nif (true) { gate g a { x a; } }", 4, 13, "gate definitions must be global"),
    ("qubit q;\nint[8] v;\nv ~= 1;", 5, 1, "'~=' is not an assignment operator"),
    ("qubit q;\narray[int[8], 2] a;", 4, 1, "the classical type array is not supported"),
    ("qubit q;\ncomplex[float] w;", 4, 1, "the classical type complex is not supported"),
    ("qubit q;\nint v = 1;\nv = w;", 5, 5, "'w' is not declared"),
    ("qubit q;\nconst int k = 1;\nk = 2;", 5, 1, "'k' is a constant and cannot be assigned"),
    ("qubit[2] h;\nint x;", 3, 10, "'h' is the name of a gate"),
    ("qubit q;\nint cx = 1;", 4, 5, "'cx' is the name of a gate"),
    ("qubit[2] cx;\nh cx[0];", 3, 10, "'cx' is the name of a gate"),  # a static program too
    ("qubit q;\nint v;\nqubit[2] v;", 5, 10, "'v' is already declared"),
    ("qubit q;\nbit[2] rz;\nif (rz[0]) x q;", 4, 8, "'rz' is the name of a gate"),
    ("gate g a { x a; }\nqubit q;\nint g;", 5, 5, "'g' is the name of a gate"),
    ("qubit q;\nint g;\ngate g a { x a; }", 5, 6, "'g' is already declared and cannot name"),
    ("qubit q;\ndef u2() { }", 4, 5, "'u2' is the name of a gate"),
    ("qubit q;\nfor int i in [0:1] { int t = 1; }", 4, 26, "'t' is the name of a gate"),
    ("qubit q;\nint n = 2;\nqubit[n] r;", 5, 6, "'n' is not declared"),
    ("qubit q;\nbit c;\nc = measure q;\nint k = 1 / (c - c);", 6, 9, "division by zero"),
    ("qubit q;\nextern f(int) -> int;\nint x = 1;", 4, 1, "extern is not supported"),
    ("qubit q;\nint v = 1;\nlet w = v;", 5, 1, "let (alias) is not supported"),
]


@pytest.mark.parametrize(("source", "line", "column", "fragment"), BAD)
def test_unsupported_and_bad_constructs_are_refused_with_their_place(
    source, line, column, fragment
):
    with pytest.raises(QasmError) as info:
        program = loads(HEADER + source)
        Sampler().run(program, shots=4, seed=1)  # errors of dynamic values come at run time
    assert fragment in str(info.value)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)


def test_a_measuring_subroutine_inside_an_expression_is_refused():
    text = HEADER + (
        "qubit q;\nbit[1] c;\ndef m(qubit a) -> bit { bit r; r = measure a; return r; }\n"
        "int k = 1 + m(q);\n"
    )
    with pytest.raises(QasmError, match="can only be called as a statement"):
        loads(text)
    fine = text.replace("int k = 1 + m(q);", "bit k = m(q);\nc[0] = k;")
    program = loads(fine)
    assert isinstance(program, DynamicProgram)
    assert Sampler().run(program, shots=50, seed=2).counts == {"00": 50}  # c, then k


def test_the_while_budget_is_enforced_with_a_clear_error():
    text = HEADER + "qubit q;\nbit c;\nh q;\nc = measure q;\nwhile (c | !c) { x q; }\n"
    program = loads(text, limits=QasmLimits(while_iterations=50))
    with pytest.raises(QasmError, match=r"line 7.*more than 50 iterations \(the while iteration"):
        Sampler().run(program, shots=10, seed=1)
    with pytest.raises(QasmError, match="the while iteration limit"):
        loads(HEADER + "qubit q;\nwhile (true) { x q; }", limits=QasmLimits(while_iterations=9))


def test_subroutine_recursion_is_bounded_by_the_call_depth():
    text = HEADER + "qubit q;\ndef f(int n) -> int { return f(n + 1); }\nint k = f(0);\n"
    with pytest.raises(QasmError, match=r"deeper than 20 \(the call depth limit\)"):
        loads(text, limits=QasmLimits(call_depth=20))


def test_the_step_limit_bounds_a_run():
    text = HEADER + (
        "qubit q;\nbit c;\nh q;\nc = measure q;\nint i = 0;\n"
        "while (i < 1000) { i += 1; if (c) x q; }\n"
    )
    program = loads(text, limits=QasmLimits(dynamic_steps=500))
    with pytest.raises(QasmError, match="the dynamic step limit"):
        Sampler().run(program, shots=10, seed=1)


# -- static programs stay static ---------------------------------------------------------------

BV_LOOP = HEADER + (
    "const int n = 5;\nconst int secret = 0b10110;\nqubit[n] q;\nqubit anc;\nbit[n] c;\n"
    "x anc;\nh anc;\n"
    "for int i in [0:n-1] { h q[i]; }\n"
    "for int i in [0:n-1] { if (((secret >> i) & 1) == 1) { cx q[i], anc; } }\n"
    "for int i in [0:n-1] { h q[i]; }\n"
    "c = measure q;\n"
)
BV_FLAT = HEADER + (
    "qubit[5] q;\nqubit anc;\nbit[5] c;\nx anc;\nh anc;\nh q[0];\nh q[1];\nh q[2];\nh q[3];\n"
    "h q[4];\ncx q[1], anc;\ncx q[2], anc;\ncx q[4], anc;\nh q[0];\nh q[1];\nh q[2];\nh q[3];\n"
    "h q[4];\nc = measure q;\n"
)


def test_a_for_loop_with_constant_bounds_unrolls_to_the_written_out_circuit():
    looped, flat = loads(BV_LOOP), loads(BV_FLAT)
    assert isinstance(looped, Circuit)
    assert looped.instructions == flat.instructions
    assert (looped.num_qubits, looped.num_clbits) == (flat.num_qubits, flat.num_clbits)
    result = Sampler().run(looped, shots=100, seed=3)
    assert result.counts == {"10110": 100} and result.method == "terminal"


def test_inputs_stay_circuit_parameters_when_the_program_unrolls():
    text = (
        HEADER + "input float theta;\nqubit[2] q;\nfor int i in [0:1] rx(theta * (i + 1)) q[i];\n"
    )
    circuit = loads(text)
    assert isinstance(circuit, Circuit) and circuit.parameters == ("theta",)
    bound = circuit.bind({"theta": 0.5})
    assert [float(i.params[0]) for i in bound] == [0.5, 1.0]


# -- dynamic circuits against Qiskit Aer -------------------------------------------------------


def _aer_counts(text: str, shots: int, seed: int) -> dict[str, int]:
    pytest.importorskip("qiskit_aer")
    from qiskit import qasm3, transpile
    from qiskit_aer import AerSimulator

    circuit = qasm3.loads(text) if isinstance(text, str) else text
    backend = AerSimulator(seed_simulator=seed)
    result = backend.run(transpile(circuit, backend), shots=shots).result()
    return {k.replace(" ", ""): v for k, v in result.get_counts().items()}


def _p_value(ours: dict[str, int], theirs: dict[str, int]) -> float:
    keys = sorted(set(ours) | set(theirs))
    big = [k for k in keys if ours.get(k, 0) + theirs.get(k, 0) >= 10]
    rest = [k for k in keys if k not in big]
    table = [[c.get(k, 0) for k in big] + [sum(c.get(k, 0) for k in rest)] for c in (ours, theirs)]
    table = [row[:-1] for row in table] if not rest else table
    if len(table[0]) < 2:
        return 1.0 if set(ours) == set(theirs) else 0.0
    return float(chi2_contingency(np.array(table)).pvalue)


def _ours(text: str, shots: int, seed: int):
    program = loads(text)
    return program, Sampler().run(program, shots=shots, seed=seed)


TELEPORT = HEADER + (
    "qubit[3] q;\nbit[3] c;\n"
    "ry(1.1) q[0];\nrz(0.4) q[0];\n"
    "h q[1];\ncx q[1], q[2];\ncx q[0], q[1];\nh q[0];\n"
    "c[0] = measure q[0];\nc[1] = measure q[1];\n"
    "if (c[1]) x q[2];\nif (c[0]) z q[2];\n"
    "rz(-0.4) q[2];\nry(-1.1) q[2];\n"  # undo the preparation: r is 0 if teleported
    "c[2] = measure q[2];\n"
)
RUS = HEADER + (
    "qubit[2] q;\nbit[2] c;\n"
    "ry(1.2) q[0];\nc[0] = measure q[0];\n"
    "while (c[0]) { reset q[0]; ry(1.2) q[0]; x q[1]; c[0] = measure q[0]; }\n"
    "c[1] = measure q[1];\n"
)
CORRECT = HEADER + (
    "qubit[2] q;\nbit[2] c;\n"
    "ry(1.0) q[0];\ncx q[0], q[1];\nc[0] = measure q[0];\n"
    "if (c[0]) { x q[1]; }\nc[1] = measure q[1];\n"
)


@pytest.mark.parametrize(
    ("name", "text"), [("teleport", TELEPORT), ("rus", RUS), ("correct", CORRECT)]
)
def test_dynamic_circuits_match_qiskit_aer(name, text):
    program, ours = _ours(text, 4000, 11)
    assert isinstance(program, DynamicProgram) and ours.method == "dynamic"
    theirs = _aer_counts(text, 4000, 11)
    assert sum(ours.counts.values()) == 4000
    assert _p_value(ours.counts, theirs) > P_MIN, (ours.counts, theirs)
    if name == "teleport":  # the teleported state is undone exactly: r is always 0
        assert all(key[0] == "0" for key in ours.counts)
    if name == "correct":
        assert all(key[0] == "0" for key in ours.counts)


def test_the_comparison_can_fail():
    wrong = TELEPORT.replace("if (c[1]) x q[2];\nif (c[0]) z q[2];\n", "")
    assert wrong != TELEPORT
    _, ours = _ours(wrong, 4000, 11)
    assert _p_value(ours.counts, _aer_counts(TELEPORT, 4000, 11)) < P_MIN


IPE = HEADER + (
    "const float phi = 0.3;\nqubit a;\nqubit tgt;\nbit[3] c;\nx tgt;\n"
    "for int k in [2:-1:0] {\n"
    "  reset a;\n  h a;\n"
    "  cp(2 * pi * phi * (1 << k)) a, tgt;\n"
    "  float corr = 0;\n"
    "  for int j in [k + 1:2] { if (c[j]) corr += pi / (1 << (j - k)); }\n"
    "  p(-corr) a;\n  h a;\n  c[k] = measure a;\n"
    "}\n"
)


def _ipe_qiskit():
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister

    a, t, c = QuantumRegister(1, "a"), QuantumRegister(1, "t"), ClassicalRegister(3, "c")
    qc = QuantumCircuit(a, t, c)
    qc.x(t[0])
    for k in (2, 1, 0):
        qc.reset(a[0])
        qc.h(a[0])
        qc.cp(2 * math.pi * 0.3 * (1 << k), a[0], t[0])
        for j in range(k + 1, 3):
            with qc.if_test((c[j], 1)):
                qc.p(-math.pi / (1 << (j - k)), a[0])
        qc.h(a[0])
        qc.measure(a[0], c[k])
    return qc


def test_iterative_phase_estimation_matches_qiskit_aer():
    program, ours = _ours(IPE, 4000, 5)
    assert isinstance(program, DynamicProgram)
    theirs = _aer_counts(_ipe_qiskit(), 4000, 5)
    assert _p_value(ours.counts, theirs) > P_MIN, (ours.counts, theirs)
    # 0.3 = 0.0100110..b: the best 3-bit estimate 010 (0.25) is the most frequent
    assert max(ours.counts, key=ours.counts.get) == "010"


def test_bernstein_vazirani_with_a_for_loop_matches_qiskit_aer():
    ours = Sampler().run(loads(BV_LOOP), shots=200, seed=1).counts
    assert ours == _aer_counts(BV_FLAT, 200, 1) == {"10110": 200}  # Qiskit reads no const


# -- the branching simulator -------------------------------------------------------------------


def test_many_shots_make_few_branches():
    result = Sampler().run(loads(TELEPORT), shots=16_384, seed=4)
    # three measurements: at most 2^3 outcome histories, however many shots follow them
    assert result.metadata["states"] <= 8 and result.method == "dynamic"
    assert sum(result.counts.values()) == 16_384
    more = Sampler().run(loads(TELEPORT), shots=200_000, seed=4)  # 13 groups of <= 16,384
    assert more.metadata["groups"] == 13 and more.metadata["states"] <= 8 * 13


def test_the_branch_bound_runs_groups_of_shots_with_the_same_distribution():
    text = HEADER + (
        "qubit[4] q;\nbit[4] c;\nh q;\nc = measure q;\n"
        "if (c[0] ^ c[1]) x q[0];\nc[0] = measure q[0];\n"
    )
    bounded = loads(text, limits=QasmLimits(branches=4))
    result = Sampler().run(bounded, shots=3000, seed=9)
    assert result.method == "dynamic (in 750 groups of <= 4 shots: the branch bound)"
    assert result.metadata["groups"] == 750 and sum(result.counts.values()) == 3000
    free = Sampler().run(loads(text), shots=3000, seed=9)
    assert free.method == "dynamic" and free.metadata["states"] <= 16
    assert _p_value(result.counts, free.counts) > P_MIN
    assert Sampler().run(bounded, shots=3000, seed=9).counts == result.counts  # seeded


def test_seeded_runs_repeat_and_different_seeds_differ():
    program = loads(RUS)
    a, b = (Sampler().run(program, shots=500, seed=21) for _ in range(2))
    assert a.counts == b.counts
    assert Sampler().run(program, shots=500, seed=22).counts != a.counts


def test_subroutines_with_qubit_arguments_and_return_values():
    text = HEADER + (
        "qubit[2] q;\nbit[2] c;\n"
        "def flip_if(bit b, qubit target) { if (b) x target; }\n"
        "def coin(qubit a) -> bit { bit r; h a; r = measure a; return r; }\n"
        "bit got = coin(q[0]);\nflip_if(got, q[1]);\nc[1] = measure q[1];\nc[0] = got;\n"
    )
    counts = Sampler().run(loads(text), shots=2000, seed=3).counts
    # every global bit is an output: got (bit 2), then c[1] and c[0]
    assert set(counts) == {"000", "111"} and 850 < counts["111"] < 1150


def test_gate_angles_follow_classical_variables():
    text = HEADER + (
        "qubit q;\nbit c;\nbit[1] out;\nh q;\nc = measure q;\nangle[16] a = pi;\n"
        "float[64] f = c ? 1.0 : 0.0;\n"
    )
    with pytest.raises(QasmError):
        loads(text)  # no ternary in OpenQASM 3
    text = HEADER + (
        "qubit[2] q;\nbit c;\nbit[1] out;\nh q[0];\nc = measure q[0];\nangle[16] a = pi;\n"
        "int k = int(c) + 1;\nrx(a / k) q[1];\nout[0] = measure q[1];\n"
    )
    counts = Sampler().run(loads(text), shots=4000, seed=8).counts
    # c=0: rx(pi) flips (p1=1); c=1: rx(pi/2) (p1=1/2): P(out=1) = 3/4 (keys: out, c)
    ones = sum(n for key, n in counts.items() if key[0] == "1")
    assert abs(ones / 4000 - 0.75) < 0.04 and counts.get("10", 0) > 1800


# -- wiring: sampler parameters, estimator, jobs ------------------------------------------------

WITH_INPUT = HEADER + (
    "input float theta;\nqubit[2] q;\nbit[2] c;\nrx(theta) q[0];\nc[0] = measure q[0];\n"
    "if (c[0]) x q[1];\nc[1] = measure q[1];\n"
)


def test_inputs_of_a_dynamic_program_are_bound_at_run_time():
    program = loads(WITH_INPUT)
    assert isinstance(program, DynamicProgram) and program.parameters == ("theta",)
    with pytest.raises(CircuitError, match="unbound parameters: theta"):
        Sampler().run(program, shots=10)
    counts = Sampler().run(program, shots=100, seed=1, parameters={"theta": math.pi}).counts
    assert counts == {"11": 100}
    assert Sampler().run(program.bind([0.0]), shots=100, seed=1).counts == {"00": 100}


def test_the_estimator_refuses_a_dynamic_program():
    with pytest.raises(CircuitError, match="classical control"):
        Estimator().run(loads(TELEPORT), PauliSum.from_labels([(1.0, "ZII")]))


def test_sampler_and_estimator_jobs_with_a_dynamic_program():
    params = {"qasm": WITH_INPUT, "shots": 64, "inputs": {"theta": math.pi}}
    result = execute.run("sampler", params, 7)
    assert result == execute.run("sampler", params, 7) and result["counts"] == {"11": 64}
    with pytest.raises(SpecError, match=r"params.qasm: the estimator needs a circuit without"):
        execute.run("estimator", {"qasm": TELEPORT, "observables": ["ZII"]}, 7)


def test_a_dynamic_program_without_measurements_is_measured_whole_like_a_circuit():
    text = HEADER + "input int n;\nqubit[2] q;\nfor int i in [0:n] x q[i];\n"
    program = loads(text)
    assert isinstance(program, DynamicProgram) and not program.has_measurements()
    result = Sampler().run(program, shots=20, seed=1, parameters={"n": 0})
    assert result.counts == {"01": 20} and result.num_clbits == 2
    job = execute.run("sampler", {"qasm": text, "shots": 8, "inputs": {"n": 1}}, 3)
    assert job["counts"] == {"11": 8}
    assert execute.outcome_width("sampler", {"qasm": text, "inputs": {"n": 1}}) == 2
    with pytest.raises(CircuitError, match=r"input n: int needs a whole number, got 0\.5"):
        Sampler().run(program, shots=1, parameters={"n": 0.5})


def test_language_features_in_one_dynamic_program():
    """Every line leaves a mark in the output bits: a wrong feature shows as a wrong key."""
    text = HEADER + (
        "qubit[3] q;\nbit[8] out;\nbit m;\nx q[0];\nm = measure q[0];\n"  # m = 1, dynamic
        "uint[8] acc = 1;\nacc **= 3;\nacc %= 5;\n"  # 1 -> 1 -> 1
        "acc += popcount(bit[4](13));\n"  # 13 = 1101b: 3 ones -> 4
        "int i = 0;\n"
        "while (true) { i += 1; if (i < 3) continue; if (i == 5) break; }\n"  # i = 5
        "for uint k in {1, 3} { acc += k * int(m); }\n"  # 4 + 1 + 3 = 8
        'for bit b in "101" { if (b) acc += 16; }\n'  # two ones: 8 + 32 = 40
        "pow(i - 3) @ x q[1];\n"  # pow(2) @ x: identity
        "ctrl(int(m)) @ x q[0], q[2];\n"  # q[0] is 1: flips q[2]
        "out[7] = measure q[2];\n"  # 1
        "out[6] = measure q[1];\n"  # 0
        "if (bool(acc) && acc == 40) { out[0] = 1; }\n"
        "angle[4] a = pi;\nout[1] = bit[4](a)[3];\n"  # pi = 1000b on 4 bits: its top bit
        "if (m) end;\nout[2] = 1;\n"  # never reached
    )
    program = loads(text)
    assert isinstance(program, DynamicProgram)
    # key: m, then out[7]..out[0]
    assert Sampler().run(program, shots=20, seed=1).counts == {"110000011": 20}


def test_empty_nested_loops_are_bounded_by_the_step_limit():
    text = HEADER + "qubit q;\nfor int i in [0:99999] { for int j in [0:99999] { } }\n"
    with pytest.raises(QasmError, match=r"line 4.*past 1000 statement steps"):
        loads(text, limits=QasmLimits(dynamic_steps=1000))


def test_final_measurements_are_drawn_not_branched():
    """Feed-forward on two qubits, then every qubit measured: the final measurements are drawn
    from each branch's state, so 4 histories, not one branch per distinct outcome."""
    text = HEADER + (
        "qubit[6] q;\nbit[2] m;\nbit[6] c;\n"
        "for int i in [0:5] { ry(0.4 * (i + 1)) q[i]; }\n"
        "for int i in [0:4] { cx q[i], q[i + 1]; }\n"
        "m[0] = measure q[0];\nif (m[0]) { x q[0]; rz(0.7) q[5]; }\n"
        "m[1] = measure q[1];\nif (m[1]) { ry(0.5) q[4]; }\n"
        "for int i in [0:4] { cx q[i], q[i + 1]; }\n"
        "c = measure q;\n"
    )
    program, ours = _ours(text, 3000, 13)
    assert isinstance(program, DynamicProgram) and ours.metadata["states"] <= 4
    assert ours.method == "dynamic" and len(ours.counts) > 16
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister

    q, m, c = QuantumRegister(6, "q"), ClassicalRegister(2, "m"), ClassicalRegister(6, "c")
    qc = QuantumCircuit(q, m, c)
    for i in range(6):
        qc.ry(0.4 * (i + 1), q[i])
    for i in range(5):
        qc.cx(q[i], q[i + 1])
    qc.measure(q[0], m[0])
    with qc.if_test((m[0], 1)):
        qc.x(q[0])
        qc.rz(0.7, q[5])
    qc.measure(q[1], m[1])
    with qc.if_test((m[1], 1)):
        qc.ry(0.5, q[4])
    for i in range(5):
        qc.cx(q[i], q[i + 1])
    qc.measure(q, c)
    theirs = _aer_counts(qc, 3000, 13)
    assert _p_value(ours.counts, theirs) > P_MIN, (ours.counts, theirs)


FUZZ_BASE = HEADER + (
    "qubit[3] q;\nbit[3] c;\nint[8] n = 3;\nuint k = 0;\n"
    "def f(int a, qubit r) -> int { rx(a * 0.1) r; return a + 1; }\n"
    "for int i in [0:2] { h q[i]; }\nc[0] = measure q[0];\n"
    "while (c[0] && k < 4) { k += 1; reset q[0]; h q[0]; c[0] = measure q[0]; }\n"
    "if (c[0] == 0) { n = f(n, q[1]); } else { n <<= 1; }\n"
    "for uint j in {1, 2} { if (j > 1) break; cx q[0], q[j]; }\nc = measure q;\n"
)
TOKENS = ["", ";", "{", "}", "(", ")", "[", "]", "0", "-1", "c", "q", "n", "k", "+", "<<", "="]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(FUZZ_BASE) - 1), st.sampled_from(TOKENS)), max_size=3))
def test_mutated_dynamic_programs_run_or_fail_with_a_quantum_error(edits):
    """Hostile text: whatever a mutation makes of the program, loading and running it either
    works or raises a QuantumError (a QasmError with its place when the text is at fault)."""
    text = FUZZ_BASE
    for position, token in edits:
        text = text[:position] + token + text[position + 1 :]
    limits = QasmLimits(while_iterations=100, dynamic_steps=20_000, call_depth=8)
    try:
        Sampler().run(loads(text, limits=limits), shots=8, seed=1)
    except QasmError as error:
        assert error.line is not None, str(error)


def test_a_bad_cast_outside_an_expression_has_its_place():
    with pytest.raises(QasmError, match=r"line 4, column 1: cannot cast int to angle\[4\]"):
        loads(HEADER + "qubit q;\nfor angle[4] a in {1, 2} { rx(a) q; }\n")


def test_a_small_branch_bound_does_not_bias_the_outcomes():
    """A biased coin (P(1) = 1/4) measured mid-circuit and copied by feed-forward, with a bound
    of one branch. Re-running the groups that passed the bound (the former fallback) kept the
    groups whose shots happened to agree, mostly on 0: P(1) came out near 0.1. Groups of at most
    the bound stay exact."""
    text = HEADER + (
        "qubit[2] q;\nbit a;\nbit[1] r;\nry(pi / 3) q[0];\n"
        "a = measure q[0];\nif (a) x q[1];\nr[0] = measure q[1];\n"
    )
    shots = 4000
    result = Sampler().run(loads(text, limits=QasmLimits(branches=1)), shots=shots, seed=11)
    ones = sum(count for key, count in result.counts.items() if key[0] == "1")
    # binomial(4000, 1/4): 6 standard deviations = 164 shots (false failure < 2e-9); the
    # former fallback was ~600 shots off
    assert abs(ones - shots / 4) < 6 * (shots * 0.25 * 0.75) ** 0.5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("angle[2000] a = 1.0;", "width must be between 1 and 128"),
        ("uint[129] v = 1;", "width must be between 1 and 128"),
        ("for int i in [0:1e30] { x q; }", "more than 100000 iterations"),
        (
            "uint[64] a = 18446744073709551615;\nfor int i in [0:a] { x q; }",
            "more than 100000 iterations",
        ),
        ("for int i in [0:-1:-1e30] { x q; }", "more than 100000 iterations"),
    ],
)
def test_hostile_widths_and_ranges_are_refused_before_the_work(body: str, message: str) -> None:
    """Found by review: 2000-bit angles and floats overflowed, a range of 1e30 rounds raised
    OverflowError from len(); widths above 128 bits made one power take 0.5 s per step."""
    with pytest.raises(QasmError, match=message):
        loads(HEADER + "qubit q;\nbit c;\n" + body + "\nc = measure q;")


def test_the_widest_values_convert_without_overflow() -> None:
    text = HEADER + (
        "qubit q;\nbit c;\nuint[128] v = ~0;\nfloat f = float(v);\nangle[128] a = 3.0;\n"
        "rz(f / 1e38) q;\nrz(a) q;\nc = measure q;\n"
    )
    assert isinstance(loads(text), Circuit)


def test_long_expressions_are_charged_by_their_length() -> None:
    """A step is charged its statement's expression nodes: a loop whose body is one long
    statement reaches the step limit in proportionally fewer rounds."""
    long_sum = " + ".join(["i"] * 200)
    short = HEADER + "qubit q;\nint total = 0;\nfor int i in [0:99] { total = i; }\n"
    long = HEADER + f"qubit q;\nint total = 0;\nfor int i in [0:99] {{ total = {long_sum}; }}\n"
    loads(short, limits=QasmLimits(dynamic_steps=2_000))
    with pytest.raises(QasmError, match="dynamic step limit"):
        loads(long, limits=QasmLimits(dynamic_steps=2_000))


def test_the_step_limit_holds_over_all_groups_of_a_run():
    """More shots than the branch bound run in several groups; they share one step budget, so a
    run's time cannot grow with the shots (found by review)."""
    text = HEADER + (
        "qubit q;\nbit c;\nint i = 0;\nh q;\nc = measure q;\nif (c) x q;\n"
        "while (i < 20) { i += 1; }\n"
    )
    limits = QasmLimits(branches=2, dynamic_steps=5_000)
    assert sum(Sampler().run(loads(text, limits=limits), shots=20, seed=1).counts.values()) == 20
    with pytest.raises(QasmError, match="the dynamic step limit"):
        Sampler().run(loads(text, limits=limits), shots=2_000, seed=1)

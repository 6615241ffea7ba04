"""OpenQASM programs that cost far more than their size: each attack replayed, with its bound.

Issue 13 item 1: a 192 KiB program of ~11,000 trivial gate definitions cost the importer
~1.6 GB (each definition copied the whole gate table), and 20-40 levels of nested macros
(~1 KiB) were refused only after seconds of CPU and ~300 MB. The programs are generated
here; memory is measured with tracemalloc (peak bytes allocated, a deterministic figure),
never by the clock. The reference parser's own cost is linear in the text and bounded by the
caller's size limit, so the importer is measured on its own where the text is large.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.errors import QasmError, QuantumError
from qiz.quantum.qasm import QasmLimits, load, loads
from qiz.quantum.qasm.codec import _parse
from qiz.quantum.qasm.expr import Locator
from qiz.quantum.qasm.importer import Importer
from qiz.quantum.qasm.limits import MAX_EXPANSION, MAX_GATE_DEFINITIONS, MAX_GATE_DEPTH

T = TypeVar("T")
MB = 1 << 20


def peak_of(work: Callable[[], T]) -> tuple[T | BaseException, int]:
    """What ``work`` returned (or raised) and the peak bytes it allocated meanwhile."""
    tracemalloc.start()
    try:
        try:
            result: T | BaseException = work()
        except Exception as exc:  # returned, so the caller can assert on it with the peak
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def import_only(text: str, **kwargs: QasmLimits) -> tuple[Circuit | BaseException, int]:
    """The importer's result and peak on an already parsed program (the parser untraced)."""
    program = _parse(text)
    return peak_of(lambda: Importer(text, Locator(text), "attack", **kwargs).run(program))


def definitions(count: int) -> str:
    """The first attack: nothing but trivial gate definitions, the last one called."""
    lines = ["OPENQASM 3.0;", "qubit[1] q;"]
    lines += [f"gate g{i} a {{ x a; }}" for i in range(count)]
    lines.append(f"g{count - 1} q[0];")
    return "\n".join(lines) + "\n"


def nested(levels: int, base: str = "x a;", width: int = 2) -> str:
    """The second attack: each macro calls the one before ``width`` times (2**levels calls)."""
    lines = ["OPENQASM 3.0;", "qubit[1] q;", f"gate m0 a {{ {base} }}"]
    for i in range(1, levels + 1):
        lines.append(f"gate m{i} a {{ " + " ".join([f"m{i - 1} a;"] * width) + " }")
    lines.append(f"m{levels} q[0];")
    return "\n".join(lines) + "\n"


# -- the gate table: definitions are linear ----------------------------------------------------


@pytest.fixture(scope="module")
def eleven_thousand() -> str:
    text = definitions(11_000)
    assert 190 * 1024 < len(text.encode()) < 256 * 1024  # the attack's size, under a spec's cap
    return text


def test_eleven_thousand_definitions_are_refused_at_the_cap_in_bounded_memory(
    eleven_thousand: str,
) -> None:
    result, peak = import_only(eleven_thousand)
    assert isinstance(result, QasmError)
    assert result.reason == (
        f"more than {MAX_GATE_DEFINITIONS} gate definitions (the gate definition limit)"
    )
    assert result.line == 2 + MAX_GATE_DEFINITIONS + 1  # the first one past the cap
    assert peak < 50 * MB, f"the importer peaked at {peak / MB:.0f} MiB"  # was ~1.6 GB


def test_thousands_of_definitions_under_the_cap_are_accepted_in_linear_memory() -> None:
    result, peak = import_only(definitions(5_000))  # ~110 KiB; the old quadratic copy: ~330 MB
    assert isinstance(result, Circuit) and [i.name for i in result] == ["x"]
    assert peak < 50 * MB, f"the importer peaked at {peak / MB:.0f} MiB"


def test_a_definition_sees_only_the_gates_defined_before_it() -> None:
    """The view by position keeps the old scoping: no recursion, no forward references."""
    with pytest.raises(QasmError, match="unknown gate 'later'"):
        loads("OPENQASM 3.0; qubit q; gate early a { later a; } gate later a { x a; } early q;")
    with pytest.raises(QasmError, match="unknown gate 'self'"):
        loads("OPENQASM 3.0; qubit q; gate self a { self a; } self q;")
    # A user gate defined after another that uses the built-in of the same name: each its own.
    circuit = loads("OPENQASM 3.0; qubit q; gate a1 a { sx a; } gate sx a { x a; } a1 q; sx q;")
    assert [i.name for i in circuit] == ["sx", "x"]


# -- nested macros: refused before they grow ----------------------------------------------------


@pytest.mark.parametrize("levels", [20, 30, 40])
def test_nested_macros_are_refused_before_expanding(levels: int) -> None:
    text = nested(levels)
    assert len(text) < 1300  # ~1 KiB of text
    result, peak = peak_of(lambda: loads(text))
    assert isinstance(result, QasmError)
    assert result.reason == (
        f"gate 'm{levels}' expands past the budget of {MAX_EXPANSION} expansion steps"
    )
    assert (result.line, result.column) == (levels + 4, 1)  # the call, not somewhere inside
    assert peak < 5 * MB, f"peaked at {peak / MB:.1f} MiB"  # was ~300 MB


def test_nested_macros_that_make_no_instruction_still_pay_for_their_calls() -> None:
    """gphase yields no instruction, yet 2**40 calls of it are 2**40 calls of work."""
    result, peak = peak_of(lambda: loads(nested(40, base="gphase(pi);")))
    assert isinstance(result, QasmError)
    assert "gate 'm40' expands past the budget" in result.reason
    assert peak < 5 * MB


def test_a_pow_whose_exponent_is_a_parameter_is_stopped_as_it_grows() -> None:
    """pow(t) is unknown until the call, so the up-front bound cannot see it: the room can."""
    lines = ["OPENQASM 3.0;", "qubit q;", "gate m0(t) a { x a; }"]
    lines += [f"gate m{i}(t) a {{ pow(t) @ m{i - 1}(t) a; }}" for i in range(1, 41)]
    text = "\n".join([*lines, "m40(2) q;"])
    result, peak = peak_of(lambda: loads(text, limits=QasmLimits(instructions=10_000)))
    assert isinstance(result, QasmError)
    assert result.reason == "pow(2) expands past 10000 instructions"
    assert peak < 5 * MB


def test_legal_nesting_within_the_budget_is_expanded_exactly() -> None:
    circuit = loads(nested(12))
    assert len(circuit) == 4096 and {i.name for i in circuit} == {"x"}
    three = loads(nested(5, width=3))
    assert len(three) == 3**5


def test_definition_depth_is_capped() -> None:
    """A chain of single calls costs nothing to expand but one level of recursion each."""

    def chain(depth: int) -> str:
        lines = ["OPENQASM 3.0;", "qubit q;", "gate c1 a { x a; }"]
        lines += [f"gate c{i} a {{ c{i - 1} a; }}" for i in range(2, depth + 1)]
        return "\n".join([*lines, f"c{depth} q;"])

    assert len(loads(chain(MAX_GATE_DEPTH))) == 1
    with pytest.raises(QasmError) as info:
        loads(chain(MAX_GATE_DEPTH + 1))
    assert info.value.reason == (
        f"gate 'c{MAX_GATE_DEPTH + 1}' nests gate calls {MAX_GATE_DEPTH + 1} deep; "
        f"the gate depth limit is {MAX_GATE_DEPTH}"
    )


# -- other things that grow faster than the text -----------------------------------------------


def test_barriers_over_a_wide_register_are_paid_per_qubit() -> None:
    text = "OPENQASM 3.0;\nqubit[65536] q;\n" + "barrier;\n" * 400  # 4 KiB; 26M qubit slots
    result, peak = peak_of(lambda: loads(text))
    assert isinstance(result, QasmError)
    assert (
        result.reason == f"the program expands past the budget of {MAX_EXPANSION} expansion steps"
    )
    assert peak < 50 * MB, f"peaked at {peak / MB:.0f} MiB"


def test_large_registers_cost_no_memory_until_used() -> None:
    result, peak = peak_of(lambda: loads("OPENQASM 3.0; qubit[65536] q; bit[1048576] c;"))
    assert isinstance(result, Circuit) and (result.num_qubits, result.num_clbits) == (
        1 << 16,
        1 << 20,
    )
    assert peak < 5 * MB, f"peaked at {peak / MB:.1f} MiB"


def test_an_expression_broadcast_over_a_register_is_paid_per_evaluation() -> None:
    angle = "+".join(["0.001"] * 60)
    text = f"OPENQASM 3.0;\nqubit[4096] q;\nrx({angle}) q;\n"  # 490k expression nodes
    with pytest.raises(QasmError, match="expands past the budget of 100000 expansion steps"):
        loads(text, limits=QasmLimits(expansion=100_000))
    assert len(loads(text, limits=QasmLimits(expansion=10_000_000))) == 4096


def test_an_unclosed_comment_is_scanned_once() -> None:
    """Every '/*' of an unclosed run used to rescan the rest of the text (quadratic)."""
    with pytest.raises(QasmError, match="the program is empty"):
        loads("/*a" * 30_000)


def test_limits_are_validated_and_reach_load(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"QasmLimits\.expansion must be a non-negative integer"):
        QasmLimits(expansion=-1)
    path = tmp_path / "wide.qasm"
    path.write_text("OPENQASM 3.0;\nqubit[3] q;\nh q;\n")
    assert len(load(path)) == 3
    with pytest.raises(QasmError, match=r"wide\.qasm, line 2, column 1: more than 2 qubits"):
        load(path, limits=QasmLimits(qubits=2))
    with pytest.raises(QasmError, match="more than 1 gate definitions"):
        loads(
            "OPENQASM 3.0; gate a q { x q; } gate b q { x q; }",
            limits=QasmLimits(gate_definitions=1),
        )


# -- property: random definition graphs stay within the budget ---------------------------------

TIGHT = QasmLimits(instructions=2_000, gate_definitions=12, gate_depth=6, expansion=20_000)
MODIFIERS = st.sampled_from(["", "inv @ ", "pow(2) @ ", "pow(-3) @ ", "pow(0) @ ", "pow(t) @ "])


@st.composite
def macro_programs(draw: st.DrawFn) -> str:
    """Definitions whose bodies call earlier ones (any number of times, with modifiers)."""
    count = draw(st.integers(1, 14))
    lines = ["OPENQASM 3.0;", "qubit[3] q;"]
    for i in range(count):
        calls = draw(st.lists(st.integers(-3, i - 1), min_size=0, max_size=5))
        body = []
        for callee in calls:
            mod = draw(MODIFIERS)
            if callee < 0:  # a gate of the set, a phase, or a barrier
                body.append(["x a;", "rz(t) a;", "gphase(t);", "barrier a;"][callee + 3])
            else:
                body.append(f"{mod}d{callee}(t) a;")
        lines.append(f"gate d{i}(t) a {{ {' '.join(body)} }}")
    for callee in draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=4)):
        mod = draw(MODIFIERS).replace("(t)", "(2)")
        if draw(st.booleans()):  # under a control: phases become gates, x becomes cx, ...
            lines.append(f"ctrl @ {mod}d{callee}(0.5) q[2], q[0];")
        else:
            lines.append(f"{mod}d{callee}(0.5) q;")
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(macro_programs())
def test_random_macro_programs_stay_within_their_budget(text: str) -> None:
    program = _parse(text)
    importer = Importer(text, Locator(text), "random", TIGHT)
    result, peak = peak_of(lambda: importer.run(program))
    if isinstance(result, BaseException):
        assert isinstance(result, QuantumError), f"{type(result).__name__}: {result}"
    else:
        assert len(result) <= TIGHT.instructions
        assert importer.budget.used <= TIGHT.expansion + 1
    assert peak < 8 * MB, f"peaked at {peak / MB:.1f} MiB"


@settings(max_examples=60, deadline=None)
@given(macro_programs())
def test_the_up_front_bound_never_refuses_a_program_that_fits(text: str) -> None:
    """Run with room to spare, then again with exactly the steps it took: still accepted."""
    program = _parse(text)
    roomy = QasmLimits(instructions=2_000, expansion=200_000)
    first = Importer(text, Locator(text), "random", roomy)
    try:
        circuit = first.run(program)
    except QuantumError:
        return
    exact = QasmLimits(instructions=2_000, expansion=first.budget.used)
    again = Importer(text, Locator(text), "random", exact).run(program)
    assert again.instructions == circuit.instructions

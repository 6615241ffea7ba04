"""Sizes named in a job spec are refused by what they say, before anything is built (issue 13,
fuzz findings 4-6 and their siblings).

A peer reaches these parsers with ``job.offer``: a name of 16 to 5,000 bytes (``tfim:<5,000
digits>``, ``random:20000,2``, ``hva:20000``, ``p cnf <digits> 1``, a 150,000-letter Pauli label)
cost the node a ``ValueError`` from ``int()`` (an internal error, not the layer's), or seconds and
tens of MB before a limit applied. Each case asserts the one-line error that names the limit and
a bound on the Python allocations made while refusing it (tracemalloc peak).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz.compute import execute
from qiz.compute.errors import SpecError
from qiz.compute.spec import Limits
from qiz.quantum.algorithms.ansatz import MAX_LAYERS, HardwareEfficientAnsatz, parse_ansatz
from qiz.quantum.core.errors import HamiltonianError, QuantumError
from qiz.quantum.core.memory import MAX_QUBITS
from qiz.quantum.core.names import whole
from qiz.quantum.core.pauli import PauliSum
from qiz.quantum.problems.cnf import MAX_CNF_VARIABLES, Cnf
from qiz.quantum.problems.graphs import (
    MAX_GRAPH_NODES,
    MAX_RANDOM_DEGREE,
    load_graph,
    parse_edge_list,
    random_regular,
)

MiB = 1 << 20
# what refusing one of these names may allocate: a few copies of the name itself, no more
REFUSAL_PEAK = 1 * MiB
DIGITS = "9" * 5000  # past int()'s 4,300-digit limit


def refused(call: Callable[[], Any], error: type[Exception]) -> tuple[str, int]:
    """The message of the ``error`` that ``call()`` raises, and the tracemalloc peak meanwhile."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(error) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "\n" not in message and len(message) < 240, message  # one line, whatever was sent
    return message, peak


def shape(kind: str, **params: Any) -> execute.Shape:
    return execute.shape(kind, params)


# ----------------------------------------------------------------------------- Hamiltonians


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tfim:" + DIGITS, "expected tfim:N or tfim:N:ring with 2 <= N <= 34"),
        ("heisenberg:" + DIGITS + ":ring", "with 2 <= N <= 34"),
        ("tfim:35", "with 2 <= N <= 34"),
        ("qubits " + DIGITS + "\n1 Z0", "expected 'qubits N' with N >= 1 (at most 34)"),
        ("1 Z" + DIGITS, "is beyond 34 qubits"),
        ("1 X0 Z" + "0" * 4999 + "34", "is beyond 34 qubits"),
        ("1 " + "X" * 150_000, "a label of 150000 letters; at most 34 qubits"),
    ],
)
def test_a_hamiltonian_name_is_bounded_before_int_and_before_its_masks(
    text: str, message: str
) -> None:
    """Finding 4 (``tfim:<5,000 digits>`` raised ValueError) and its siblings in the text
    format; through a spec each is a SpecError naming params.hamiltonian."""
    got, peak = refused(lambda: PauliSum.builtin(text) or PauliSum.loads(text), HamiltonianError)
    assert message in got
    assert peak <= REFUSAL_PEAK, peak / MiB
    got, peak = refused(lambda: shape("vqe", hamiltonian=text), SpecError)
    assert got.startswith("params.hamiltonian") and message in got
    assert peak <= REFUSAL_PEAK, peak / MiB


def test_hamiltonian_sizes_within_the_bounds_still_parse() -> None:
    assert PauliSum.builtin("tfim:034:ring").num_qubits == 34  # leading zeros, as before
    assert PauliSum.loads("qubits 0034\n1 Z0033").num_qubits == 34
    assert PauliSum.loads("1 " + "X" * 34).num_qubits == 34
    with pytest.raises(HamiltonianError, match="at most 34 qubits, not 40"):
        PauliSum.from_labels([(1.0, "Z" * 40)])


# ----------------------------------------------------------------------------- graphs


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ("random:20000,2", "graph 'random:20000,2': at most 34 nodes (one qubit each)"),
        ("random:2000000,2", "at most 34 nodes"),
        (f"random:{DIGITS},2", "at most 34 nodes"),
        ("random:34,32", "graph 'random:34,32': the degree is at most 16"),
        (f"random:20,{DIGITS}", "the degree is at most 16"),
        ("0 1\n1 20000", "nodes must be integers from 0 to 33 (at most 34 nodes"),
        ("0 1" + "0" * 4000, "nodes must be integers from 0 to 33"),
        (f"0 {DIGITS}", "nodes must be integers from 0 to 33"),
    ],
)
def test_a_graph_is_bounded_before_it_is_built(graph: str, message: str) -> None:
    """Finding 5: ``random:20000,2`` built 20,000 networkx nodes (12-23 MiB, 1 s; 2,000,000 are
    GBs) and was accepted by the shape; ``random:34,32`` took 1.2-3.9 s in networkx's pairing
    retries; an edge list's node 10^4000 was accepted as a 10^4000-qubit shape."""
    got, peak = refused(lambda: shape("qaoa", graph=graph, p=1), SpecError)
    assert got.startswith("params.graph") and message in got
    assert peak <= REFUSAL_PEAK, peak / MiB


def test_a_callers_qubit_limit_bounds_the_graph_and_legal_graphs_still_build() -> None:
    with pytest.raises(QuantumError, match="at most 12 nodes"):
        load_graph("random:20,3", 0, max_nodes=12)
    with pytest.raises(QuantumError, match="from 0 to 11"):
        parse_edge_list("0 1\n1 12", max_nodes=12)
    with pytest.raises(QuantumError, match="at most 34 nodes"):
        random_regular(40, 3, 0)
    g = load_graph(f"random:{MAX_GRAPH_NODES},{MAX_RANDOM_DEGREE}", 0)
    assert g.num_nodes == 34 and len(g.edges) == 34 * 16 // 2
    assert parse_edge_list("0 33\n01 2").num_nodes == 34


# ----------------------------------------------------------------------------- ansätze


@pytest.mark.parametrize(
    ("ansatz", "message"),
    [
        ("hva:20000", "ansatz 'hva:20000': at most 10000 layers"),
        ("hva:100000:multi", "at most 10000 layers"),
        ("hea:" + DIGITS, "at most 10000 layers"),
        ("hea:20000:ring:cx", "at most 10000 layers"),
    ],
)
def test_an_ansatz_layer_count_is_refused_at_once(ansatz: str, message: str) -> None:
    """Finding 6: ``hva:20000`` built every layer to count parameters (64 MiB, 8.6 s here;
    hva:100000 320 MiB, 89 s) and was then accepted; ``hea:<5,000 digits>`` raised ValueError."""
    got, peak = refused(lambda: shape("vqe", hamiltonian="tfim:4", ansatz=ansatz), SpecError)
    assert got.startswith("params.ansatz") and message in got
    assert peak <= REFUSAL_PEAK, peak / MiB


def test_an_ansatz_is_sized_without_building_it() -> None:
    """The largest legal names are counted, not built: ``hva:10000`` on a 34-qubit ring is
    680,000 gates, which the node's instruction limit then refuses (the shape counted it in
    under a MiB); at d378dc9 the shape reported 20,068 (parameters, not gates) and passed."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        big = shape("vqe", hamiltonian="tfim:34:ring", ansatz=f"hva:{MAX_LAYERS}", exact=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert big.instructions == 34 + MAX_LAYERS * 68 + 68
    assert big.instructions > Limits().max_instructions
    assert peak <= REFUSAL_PEAK, peak / MiB


HAMILTONIANS = st.sampled_from(
    [
        "tfim:3",
        "tfim:5:ring",
        "1 Z0\n0.5 Y1\n1e-13j X0",  # a term whose real part is 0: no shared parameter from it
        "qubits 3\n2 III",
        "1 Z0 Z1\n0.5 Z2",
        "0.3 X0\n-0.2 Y2",
    ]
)
ANSATZ_NAMES = st.one_of(
    st.tuples(
        st.integers(1, 4),
        st.sampled_from(["", ":ring", ":none", ":ladder"]),
        st.sampled_from(["", ":cz", ":cx"]),
    ).map(lambda t: f"hea:{t[0]}{t[1]}{t[2]}"),
    st.tuples(st.integers(1, 4), st.sampled_from(["", ":multi"])).map(
        lambda t: f"hva:{t[0]}{t[1]}"
    ),
)


@given(HAMILTONIANS, ANSATZ_NAMES)
def test_counted_sizes_equal_the_built_circuits(text: str, name: str) -> None:
    h = PauliSum.builtin(text) or PauliSum.loads(text)
    ansatz = parse_ansatz(name, h)
    circuit = ansatz.circuit()
    assert ansatz.num_parameters == len(circuit.parameters)
    assert ansatz.num_instructions == len(circuit.instructions)
    if not isinstance(ansatz, HardwareEfficientAnsatz):
        assert len(ansatz.initial_point()) == ansatz.num_parameters
    assert execute.shape("vqe", {"hamiltonian": text, "ansatz": name}).instructions == len(
        circuit.instructions
    ) + len(h)


# ----------------------------------------------------------------------------- CNF


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"p cnf {DIGITS} 1\n1 0", "with at most 34 variables (one qubit each)"),
        (f"p cnf 3 {DIGITS}\n1 0", "expected 'p cnf VARIABLES CLAUSES' with at most 34"),
        (f"p cnf 3 1\n{DIGITS} 0", "exceeds the 3 variables declared"),
        (f"p cnf 3 1\n-{DIGITS} 0", "exceeds the 3 variables declared"),
        ("p cnf 3 1\n1 0\n" + "2 0\n" * 10_000, ":3: more than the 1 clauses declared"),
    ],
)
def test_a_cnf_header_is_bounded_before_int_and_clauses_as_they_come(
    text: str, message: str
) -> None:
    got, peak = refused(lambda: shape("grover", qubits=3, cnf=text), SpecError)
    assert got.startswith("params.cnf") and message in got
    assert peak <= REFUSAL_PEAK, peak / MiB


def test_cnf_literals_within_the_bounds_still_parse() -> None:
    cnf = Cnf.loads(f"p cnf {MAX_CNF_VARIABLES} 2\n+1 -34 0\n0002 0")
    assert cnf.num_vars == 34 and cnf.clauses == ((1, -34), (2,))


# ----------------------------------------------------------------------------- the helper


@given(st.text(max_size=12) | st.from_regex(r"\A[0-9]{1,60}\Z"), st.integers(0, 10**6))
def test_whole_is_int_within_the_bound_and_none_otherwise(text: str, hi: int) -> None:
    got = whole(text, hi)
    exact = int(text) if text.isascii() and text.isdigit() else None
    assert got == (exact if exact is not None and exact <= hi else None)


def test_whole_reads_no_more_digits_than_the_bound_has() -> None:
    assert whole("9" * 100_000, MAX_QUBITS) is None  # int() of it would raise ValueError
    assert whole("0" * 100_000 + "7", MAX_QUBITS) == 7

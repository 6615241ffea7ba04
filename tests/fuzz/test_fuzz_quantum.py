"""Fuzz targets of the quantum layer's text parsers, which a peer reaches through a job spec's
params (``job.offer``): OpenQASM 3 programs, Pauli-sum Hamiltonians (and the built-in
``tfim:N``/``heisenberg:N`` names), ansatz names, MaxCut edge lists and ``random:N,D`` graphs,
and DIMACS CNF formulas.

Programs are generated from a small grammar of the constructs the importer handles (and some
it refuses), then mutated line by line, so that most examples parse and reach the importer.
The property: the parser returns its object or raises ``QuantumError`` (the layer's error,
with ``QasmError``/``HamiltonianError`` under it), never anything else.
"""

from __future__ import annotations

from hypothesis import event, example, given
from hypothesis import strategies as st

from qiz.quantum.core.errors import QuantumError

from .strategies import BOUNDARY_INTS, budget, only, peak_bytes

MiB = 1 << 20

# ----------------------------------------------------------------------------- text mutations


@st.composite
def mutated_lines(draw: st.DrawFn, text: str) -> str:
    """``text`` with whole lines dropped, repeated, swapped or cut, or junk put in."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "repeat", "swap", "cut", "junk", "char"]))
        if op == "drop":
            del lines[i]
        elif op == "repeat":
            lines[i:i] = [lines[i]] * draw(st.integers(1, 20))
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif op == "junk":
            lines.insert(i, draw(st.text(max_size=30)))
        else:
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            lines[i] = (
                line[:at] + draw(st.sampled_from(list("{}[]();,@-+*/^\"'#\\\x00é9"))) + line[at:]
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- OpenQASM

ONE = ["h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx", "id", "U", "u1", "u3", "phase"]
ONE_P = {"rx": 1, "ry": 1, "rz": 1, "p": 1, "u": 3, "u1": 1, "u2": 2, "u3": 3, "U": 3}
TWO = ["cx", "cz", "cy", "swap", "ch", "CX"]
TWO_P = {"rzz": 1, "rxx": 1, "ryy": 1, "crx": 1, "cp": 1, "cu": 4, "cphase": 1}
THREE = ["ccx", "cswap"]
NUMBERS = st.one_of(
    st.sampled_from(["pi", "pi/2", "-pi/4", "2*pi", "0", "1e400", "1/0", "tau", "euler", "theta"]),
    st.floats(-10, 10, allow_nan=False).map(lambda x: f"{x:.3f}"),
    st.sampled_from(["sin(pi)", "cos(0.5)", "sqrt(2)", "exp(1)", "ln(0)", "arccos(2)", "2**70"]),
)


@st.composite
def qasm_programs(draw: st.DrawFn) -> str:
    size = draw(st.sampled_from([0, 1, 2, 3, 5, -1, 70000]))
    lines = [
        draw(
            st.sampled_from(["OPENQASM 3.0;", "OPENQASM 2.0;", "OPENQASM 3;", "", "OPENQASM 4.0;"])
        )
    ]
    if draw(st.booleans()):
        lines.append(
            draw(
                st.sampled_from(
                    ['include "stdgates.inc";', 'include "qelib1.inc";', 'include "x.inc";']
                )
            )
        )
    lines.append(f"qubit[{size}] q;" if draw(st.integers(0, 4)) else f"qreg q[{size}];")
    lines.append(draw(st.sampled_from(["bit[3] c;", "creg c[3];", "bit c;", "bit[0] c;"])))
    if draw(st.booleans()):
        lines.append(
            draw(
                st.sampled_from(
                    [
                        "input float theta;",
                        "input angle theta;",
                        "const float theta = 0.5;",
                        "const int n = 3;",
                    ]
                )
            )
        )
    n = max(1, size) if 0 < size < 10 else 3

    def qubit() -> str:
        return draw(
            st.one_of(
                st.integers(-n - 1, n).map(lambda i: f"q[{i}]"),
                st.just("q"),
                st.sampled_from(["q[0:1]", "q[{0, 1}]", "q[0:2:1]", "r[0]", "q[n]", "q[1.5]"]),
                BOUNDARY_INTS.map(lambda i: f"q[{i}]"),
            )
        )

    def call(names_params: dict[str, int] | list[str], arity: int) -> str:
        if isinstance(names_params, dict):
            name = draw(st.sampled_from(sorted(names_params)))
            count = names_params[name] + draw(st.sampled_from([0, 0, 0, 1, -1]))
            params = "(" + ", ".join(draw(NUMBERS) for _ in range(max(0, count))) + ")"
        else:
            name, params = draw(st.sampled_from(names_params)), ""
        mods = "".join(
            draw(
                st.lists(
                    st.sampled_from(
                        [
                            "inv @ ",
                            "pow(2) @ ",
                            "pow(-1) @ ",
                            "ctrl @ ",
                            "negctrl @ ",
                            "pow(0.5) @ ",
                            "ctrl(2) @ ",
                        ]
                    ),
                    max_size=2,
                )
            )
        )
        wires = arity + mods.count("ctrl")
        return f"{mods}{name}{params} " + ", ".join(qubit() for _ in range(wires)) + ";"

    defs = []
    for i in range(draw(st.integers(0, 3))):
        body = " ".join(
            draw(
                st.sampled_from(
                    ["h a;", "cx a, b;", "rz(t) b;", "g0 a;", "x c;", "U(t, 0, pi) a;", f"g{i} a;"]
                )
            )
            for _ in range(draw(st.integers(0, 3)))
        )
        defs.append(f"gate g{i}(t) a, b {{ {body} }}")
    lines += defs
    for _ in range(draw(st.integers(0, 8))):
        choice = draw(st.integers(0, 9))
        if choice < 3:
            lines.append(call(ONE, 1))
        elif choice == 3:
            lines.append(call(ONE_P, 1))
        elif choice == 4:
            lines.append(call(TWO, 2))
        elif choice == 5:
            lines.append(call(TWO_P, 2))
        elif choice == 6:
            lines.append(call(THREE, 3))
        elif choice == 7 and defs:
            lines.append(
                f"g{draw(st.integers(0, len(defs) - 1))}({draw(NUMBERS)}) {qubit()}, {qubit()};"
            )
        else:
            lines.append(
                draw(
                    st.sampled_from(
                        [
                            "c = measure q;",
                            "c[0] = measure q[0];",
                            "measure q -> c;",
                            "reset q[0];",
                            "barrier q;",
                            "gphase(pi);",
                            "if (c[0]) x q[0];",
                            "for int i in [0:2] { h q[i]; }",
                            "def f() {}",
                            "delay[10ns] q;",
                        ]
                    )
                )
            )
    return "\n".join(lines)


@given(qasm_programs().flatmap(lambda t: st.one_of(st.just(t), mutated_lines(t))))
@example("OPENQASM 3.0;\nqubit[2] q;\nh q[0];\ncx q[0], q[1];")
@budget(1)
def test_qasm_loads_returns_a_circuit_or_quantum_error(text: str) -> None:
    from qiz.quantum import qasm

    with only(QuantumError):
        circuit = qasm.loads(text)
        assert circuit.num_qubits >= 0
        event("parsed")
        return
    event("refused")


# ----------------------------------------------------------------------------- Pauli sums

PAULI_LINES = st.one_of(
    st.tuples(NUMBERS.filter(lambda s: "(" not in s), st.text("IXYZ", min_size=1, max_size=6)).map(
        " ".join
    ),
    st.tuples(
        st.sampled_from(["1", "-0.5", "2j", "1+2i", "nan", "inf", "1e400", "x"]),
        st.lists(
            st.tuples(
                st.sampled_from("XYZIW"),
                st.sampled_from(["0", "1", "5", "33", "34", "70000", "-1", "99999999999999999999"]),
            ).map("".join),
            max_size=4,
        ).map(" * ".join),
    ).map(" ".join),
    st.sampled_from(["qubits 3", "qubits 0", "qubits 99999", "qubits x", "# comment", "", "0.5"]),
)
PAULI_TEXT = st.lists(PAULI_LINES, max_size=8).map("\n".join)
BUILTINS = st.tuples(
    st.sampled_from(["tfim:", "heisenberg:", "tfim", "ising:"]),
    st.one_of(
        st.integers(-2, 40).map(str),
        BOUNDARY_INTS.map(str),
        st.sampled_from(["", "x", "٣", "9" * 5000]),
    ),
    st.sampled_from(["", ":ring", ":open", ":"]),
).map("".join)


@given(st.one_of(PAULI_TEXT, PAULI_TEXT.flatmap(mutated_lines)))
@budget(1)
def test_pauli_loads_returns_a_sum_or_quantum_error(text: str) -> None:
    from qiz.quantum.core.pauli import PauliSum

    with only(QuantumError):
        h = PauliSum.loads(text)
        assert h.num_qubits >= 1


@example("tfim:" + "9" * 5000)  # issue 13 fuzz finding 4: int()'s 4,300-digit ValueError
@given(BUILTINS)
@budget(0.5)
def test_builtin_hamiltonian_names_give_a_sum_none_or_quantum_error(spec: str) -> None:
    from qiz.quantum.core.pauli import PauliSum

    with only(QuantumError):
        PauliSum.builtin(spec)


@given(
    st.tuples(
        st.sampled_from(["hea", "hva", "qaoa", ""]),
        st.lists(
            st.sampled_from(["1", "2", "0", "-1", "ladder", "ring", "cz", "cx", "multi", "x", ""]),
            max_size=3,
        ),
    ).map(lambda t: ":".join([t[0], *t[1]]))
)
@budget(0.5)
def test_ansatz_names_give_an_ansatz_or_quantum_error(spec: str) -> None:
    from qiz.quantum.algorithms.ansatz import parse_ansatz
    from qiz.quantum.core.pauli import PauliSum

    with only(QuantumError):
        parse_ansatz(spec, PauliSum.tfim(3))


# ----------------------------------------------------------------------------- graphs, CNF

EDGE_LINES = st.one_of(
    st.tuples(st.integers(-1, 9), st.integers(-1, 9)).map(lambda e: f"{e[0]} {e[1]}"),
    st.tuples(st.integers(0, 9), st.integers(0, 9), NUMBERS).map(lambda e: f"{e[0]} {e[1]} {e[2]}"),
    st.tuples(BOUNDARY_INTS, BOUNDARY_INTS).map(lambda e: f"{e[0]},{e[1]}"),
    st.sampled_from(["# c", "", "1 2 3 4", "a b", "1 2 nan", "1 2 inf", "9" * 5000 + " 1"]),
)


@given(st.lists(EDGE_LINES, max_size=8).map("\n".join))
@budget(1)
def test_edge_lists_give_a_graph_or_quantum_error(text: str) -> None:
    from qiz.quantum.problems.graphs import parse_edge_list

    with only(QuantumError):
        g = parse_edge_list(text)
        assert g.num_nodes >= 2 and len(g.edges) == len(g.weights) >= 1


@given(
    st.tuples(st.integers(-1, 12), st.integers(-1, 12)).map(lambda t: f"random:{t[0]},{t[1]}")
    | st.sampled_from(["random:", "random:3", "random:4,2,1", "random:x,2", "random:٣,2"])
    | st.sampled_from(["random:20000,2", "random:34,32", "random:" + "9" * 5000 + ",2"])
)
@budget(0.5)
def test_random_graph_names_give_a_graph_or_quantum_error(spec: str) -> None:
    from qiz.quantum.problems.graphs import load_graph

    with only(QuantumError):
        load_graph(spec, 0)


CNF_LINES = st.one_of(
    st.lists(st.integers(-5, 5), max_size=4).map(lambda c: " ".join(map(str, [*c, 0]))),
    st.lists(st.integers(-5, 5), max_size=4).map(lambda c: " ".join(map(str, c))),
    st.sampled_from(
        [
            "p cnf 3 2",
            "p cnf 0 0",
            "p cnf 3",
            "p dnf 3 2",
            "c x",
            "%",
            "0",
            "x",
            "p cnf 99999999999 1",
        ]
    ),
)


@given(st.lists(CNF_LINES, max_size=8).map("\n".join))
@example("p cnf 3 1\n1 -2 3 0")
@budget(1)
def test_cnf_loads_gives_a_formula_or_quantum_error(text: str) -> None:
    from qiz.quantum.problems.cnf import Cnf

    with only(QuantumError):
        cnf = Cnf.loads(text)
        assert cnf.num_vars >= 1


# ----------------------------------------------------------------------------- memory

# Adversarial inputs of a few hundred bytes to 32 KiB, and what checking them may cost. A
# worker checks every spec a peer offers, so this is what one offer can make it allocate.
SMALL_INPUT_PEAK = 4 * MiB


def gate_table_program(definitions: int) -> str:
    return (
        "OPENQASM 3.0;\n"
        + "".join(f"gate g{i} a {{ x a; }}\n" for i in range(definitions))
        + "qubit[1] q;\ng0 q[0];\n"
    )


def test_importing_many_gate_definitions_costs_memory_linear_in_the_parse() -> None:
    """Issue 13 item 1: 1,500 trivial definitions (32 KiB). The reference parser's AST of it
    peaks at about 10 MiB; a linear import stays within 24 MiB, while the quadratic copy of
    the gate table at d378dc9 reached 40 MiB (and 1.6 GB at 11,000 definitions)."""
    from qiz.quantum import qasm

    peak = peak_bytes(lambda: qasm.loads(gate_table_program(1500)))
    assert peak <= 24 * MiB, peak / MiB


def test_a_random_graph_name_is_bounded_before_it_is_built() -> None:
    from qiz.compute import execute

    peak = peak_bytes(lambda: execute.shape("qaoa", {"graph": "random:10000,2", "p": 1}))
    assert peak <= SMALL_INPUT_PEAK, peak / MiB


def test_an_ansatz_name_is_bounded_before_it_is_built() -> None:
    from qiz.compute import execute

    params = {"hamiltonian": "tfim:4", "ansatz": "hva:2000"}
    peak = peak_bytes(lambda: execute.shape("vqe", params))
    assert peak <= SMALL_INPUT_PEAK, peak / MiB


def test_large_but_legal_texts_stay_within_a_bounded_memory() -> None:
    """Texts at the spec's size limit, each refused or parsed within a bound."""
    from qiz.quantum.core.pauli import PauliSum
    from qiz.quantum.problems.cnf import Cnf
    from qiz.quantum.problems.graphs import parse_edge_list

    cases = {
        "pauli": lambda: PauliSum.loads(
            "\n".join(f"1 Z{i % 30} Z{(i + 1) % 30}" for i in range(8000))
        ),
        "pauli-deep-qubit": lambda: PauliSum.loads("1 Z65535\n" * 100),
        "edges": lambda: parse_edge_list("\n".join(f"{i} {i + 1}" for i in range(12000))),
        "cnf": lambda: Cnf.loads("p cnf 40 6000\n" + "1 -2 3 0\n" * 6000),
    }
    for name, call in cases.items():
        assert peak_bytes(call) <= 16 * MiB, name

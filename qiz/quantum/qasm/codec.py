"""OpenQASM 3 import (through the ``openqasm3`` reference parser) and export.

Import accepts the part of OpenQASM 3 that describes a gate circuit, plus OpenQASM 2 programs
that the reference parser reads (``qreg``/``creg``, ``qelib1.inc``, ``measure q -> c``):

- ``qubit``/``qreg`` and ``bit``/``creg`` declarations; several registers are laid out one after
  the other in declaration order (qubits and bits separately);
- every gate of ``gates.GATES`` and ``gates.ALIASES`` (plus ``cu1``/``cu3`` from qelib1.inc),
  whether or not ``stdgates.inc`` is included; broadcast over whole registers; indices
  (negative ones count from the end), inclusive ranges ``q[0:2]`` and sets ``q[{0, 2}]``;
- ``gate`` definitions, inlined with their arguments substituted; a definition named like one of
  our gates (e.g. the ``rzz`` an exporter writes) becomes that gate when its unitary matches;
- the modifiers ``inv @``, integer ``pow(k) @``, ``ctrl @``/``negctrl @`` (whenever the result is
  expressible in the gate set: ``ctrl @ x`` is cx, ``ctrl @ ctrl @ x`` ccx, ``ctrl @ U`` cu,
  ``ctrl @ rzz`` its cx-rz-cx expansion, ...; not ch, cu, ccx or cswap), and ``gphase``;
- ``measure``, ``reset``, ``barrier``; ``input float``/``input angle`` declare free circuit
  parameters (affine uses only, see ``expr``); ``const`` numeric declarations.

Classical control (``for``, ``while``, ``if``, classical variables, ``def``, ...) is read by
``program`` (unrolled into a ``Circuit`` when it can be, else a ``DynamicProgram``). Anything
else (switch, extern, timing, calibration, hardware qubits, arrays, non-integer powers) is
refused with a ``QasmError`` that names the construct and gives its line and (1-based) column.

The walk over the AST lives in ``importer`` and expression evaluation in ``expr``.

Global phase: a ``Circuit`` has none, and a global phase cannot be observed by sampling or by
an expectation value, so ``gphase`` at top level (and the phase of gates such as ``u3``, which
``stdgates.inc`` defines with one) is dropped. Under ``ctrl @`` a phase is no longer global: it
is kept and becomes a phase gate on the control qubit, as the specification requires.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from openqasm3 import ast
from openqasm3._antlr.qasm3Lexer import qasm3Lexer
from openqasm3._antlr.qasm3Parser import qasm3Parser
from openqasm3.parser import QASM3ParsingError, QASMNodeVisitor

from qiz.quantum.core.circuit import Circuit
from qiz.quantum.core.errors import QasmError
from qiz.quantum.core.files import read_text
from qiz.quantum.core.gates import ALIASES, GATES, NONSTANDARD_DEFINITIONS
from qiz.quantum.core.params import ParamExpr, ParamValue
from qiz.quantum.qasm.expr import CONSTANTS, FUNCTIONS, Locator
from qiz.quantum.qasm.importer import Importer
from qiz.quantum.qasm.limits import DEFAULT_LIMITS, QasmLimits
from qiz.quantum.qasm.program import DynamicProgram, build, is_static

__all__ = ["DynamicProgram", "QasmLimits", "dumps", "load", "loads"]

MAX_QASM_BYTES = 64 << 20  # far above any circuit a state vector can hold; stops a runaway file


def loads(
    text: str, *, name: str = "circuit", limits: QasmLimits = DEFAULT_LIMITS
) -> Circuit | DynamicProgram:
    """The circuit described by OpenQASM 3 (or 2) program ``text``; ``QasmError`` if it can't be.

    A program with classical control comes back as the same static ``Circuit`` when it
    unrolls at import (loops with constant bounds, no condition on a measured bit), and as a
    ``DynamicProgram`` otherwise, which ``Sampler().run`` samples (see ``program``).

    ``limits`` caps what the program may cost (see ``limits``); a caller reading untrusted
    programs can pass tighter ones, e.g. ``QasmLimits(instructions=100_000, expansion=500_000)``.
    """
    text = text.removeprefix("\ufeff")
    loc = Locator(text)
    program = _parse(text)
    try:
        importer = Importer(text, loc, name, limits)
        if is_static(program):
            return importer.run(program)
        return build(importer, program)
    except RecursionError:
        raise QasmError("gate definitions or expressions are nested too deeply") from None


def load(
    path: str | os.PathLike[str], *, limits: QasmLimits = DEFAULT_LIMITS
) -> Circuit | DynamicProgram:
    """Read an OpenQASM file; every failure (unreadable file included) is a ``QasmError``.

    Unreadable files raise ``QasmError`` too (chained to the ``OSError``), so a caller handles
    one exception type; the message names the file either way.
    """
    file = Path(path)
    text = read_text(file, max_size=MAX_QASM_BYTES, error=QasmError, kind="an OpenQASM file")
    try:
        return loads(text, name=file.stem or "circuit", limits=limits)
    except QasmError as exc:
        located = QasmError(exc.reason, exc.line, exc.column)
        where = f", line {exc.line}, column {exc.column}" if exc.line is not None else ""
        located.args = (f"{file}{where}: {exc.reason}",)
        located.path = str(file)  # type: ignore[attr-defined]
        raise located from None


# -- parsing ------------------------------------------------------------------------------------


class _SyntaxError(Exception):
    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


class _RaiseFirst(ErrorListener):
    """Stops at the first lexer or parser error, keeping its position (and printing nothing)."""

    def syntaxError(self, *args: object) -> None:  # noqa: N802 - ANTLR's callback name
        _recognizer, _offending, line, column, message, _exc = args
        raise _SyntaxError(int(line), int(column), str(message))  # type: ignore[call-overload]


def _parse(text: str) -> ast.Program:
    """The reference AST of ``text``.

    This is ``openqasm3.parse`` with one change: ANTLR's default listeners print to stderr and
    the bail-out strategy drops the position, so we install a listener that raises with the
    line, column and ANTLR's own message instead. The grammar and the AST builder are the
    reference parser's; the generated lexer and parser come from ``openqasm3._antlr`` exactly
    as ``openqasm3.parser`` imports them (pinned by the openqasm3 version).
    """
    if not _COMMENTS.sub("", text).strip():
        raise QasmError("the program is empty: no declarations or statements")
    lexer = qasm3Lexer(InputStream(text))
    parser = qasm3Parser(CommonTokenStream(lexer))
    for recognizer in (lexer, parser):
        recognizer.removeErrorListeners()
        recognizer.addErrorListener(_RaiseFirst())
    try:
        return QASMNodeVisitor().visitProgram(parser.program())
    except _SyntaxError as exc:
        raise QasmError(f"syntax error: {_tidy(exc.message)}", exc.line, exc.column + 1) from None
    except QASM3ParsingError as exc:
        found = re.match(r"L(\d+):C(\d+): (.*)", str(exc), re.DOTALL)
        if found:
            line, column, message = int(found[1]), int(found[2]) + 1, found[3]
            raise QasmError(message, line, column) from None
        raise QasmError(f"syntax error: {exc or 'invalid program'}") from None
    except RecursionError:
        raise QasmError("the program is nested too deeply to parse") from None
    except Exception as exc:  # the AST builder has other failure modes on odd trees
        raise QasmError(f"cannot read the program: {exc}") from exc


# Line and block comments; an unclosed block runs to the end of the text, which keeps the scan
# linear (with a required "*/", every "/*" of "/*/*/*..." would rescan the rest: quadratic).
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?(?:\*/|\Z)", re.DOTALL)


def _tidy(message: str) -> str:
    """ANTLR's message without its list of every token it would have accepted."""
    cut = message.find(" expecting {")
    if cut >= 0 and message.count(",", cut) > 5:
        message = message[:cut]
    message = message.replace("extraneous input", "unexpected").replace("'<EOF>'", "end of file")
    return message


# -- export -------------------------------------------------------------------------------------

# Gates stdgates.inc defines; anything else we emit is the builtin U or carries a definition.
_STDGATE_NAMES = (
    "p x y z h s sdg t tdg sx rx ry rz cx cy cz cp crx cry crz ch swap ccx cswap cu CX phase "
    "cphase id u1 u2 u3 "
)
_STDGATES = frozenset(_STDGATE_NAMES.split())
_EXPORT_NAMES = {"u": "U"}  # stdgates' u3 carries a phase under ctrl; the builtin U does not
_KEYWORD_NAMES = (
    "OPENQASM include defcalgrammar def cal defcal gate extern box let break continue if "
    "else end return for while in switch case default input output const readonly mutable "
    "qreg qubit creg bool bit int uint float angle complex array void duration stretch "
    "gphase inv pow ctrl negctrl durationof sizeof delay reset measure barrier true false im "
    "dt ns us µs ms s U CX "
)
_KEYWORDS = frozenset(_KEYWORD_NAMES.split())


def dumps(circuit: Circuit) -> str:
    """OpenQASM 3 text for ``circuit``, which ``loads`` reads back to the same instructions.

    Angles are written with ``repr`` so every float survives exactly; free parameters become
    ``input float[64]`` declarations and appear as affine expressions in gate calls.
    """
    names = circuit.parameters
    reserved = _KEYWORDS | set(CONSTANTS) | set(FUNCTIONS) | set(GATES) | set(ALIASES) | _STDGATES
    for name in names:
        if not name.isidentifier() or name in reserved:
            raise QasmError(f"parameter name {name!r} cannot be written as an OpenQASM identifier")
    qreg, creg = _fresh("q", names), _fresh("c", names)
    used = {inst.name for inst in circuit if inst.is_gate}
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";']
    for gate, definition in NONSTANDARD_DEFINITIONS.items():
        if gate in used:
            lines.append(definition)
    missing = used - _STDGATES - set(_EXPORT_NAMES) - set(NONSTANDARD_DEFINITIONS)
    if missing:
        raise QasmError(f"no OpenQASM 3 form for gate(s) {sorted(missing)}")
    lines.extend(f"input float[64] {name};" for name in names)
    if circuit.num_qubits:
        lines.append(f"qubit[{circuit.num_qubits}] {qreg};")
    if circuit.num_clbits:
        lines.append(f"bit[{circuit.num_clbits}] {creg};")
    every_qubit = tuple(range(circuit.num_qubits))
    for inst in circuit:
        operands = ", ".join(f"{qreg}[{q}]" for q in inst.qubits)
        if inst.name == "measure":
            lines.append(f"{creg}[{inst.clbits[0]}] = measure {operands};")
        elif inst.name == "reset":
            lines.append(f"reset {operands};")
        elif inst.name == "barrier":
            target = qreg if inst.qubits == every_qubit and every_qubit else operands
            lines.append(f"barrier {target};" if target else "barrier;")
        else:
            gate = _EXPORT_NAMES.get(inst.name, inst.name)
            args = f"({', '.join(_format(p) for p in inst.params)})" if inst.params else ""
            lines.append(f"{gate}{args} {operands};")
    return "\n".join(lines) + "\n"


def _fresh(base: str, taken: Sequence[str]) -> str:
    name = base
    while name in taken:
        name += "_"
    return name


def _format(value: ParamValue) -> str:
    """An angle as OpenQASM text that evaluates back to exactly the same float(s)."""
    if isinstance(value, ParamExpr) and value.terms:
        parts = [repr(float(value.const))] if value.const != 0.0 else []
        for name, coeff in value.terms:
            if not math.isfinite(coeff):
                raise QasmError(f"coefficient {coeff!r} of {name} cannot be written")
            if coeff == 1.0:
                parts.append(name)
            elif coeff == -1.0:
                parts.append(f"-{name}")
            else:
                parts.append(f"{coeff!r}*{name}")
        if not math.isfinite(value.const):
            raise QasmError(f"angle {value} cannot be written")
        return " + ".join(parts)
    number = float(value.const if isinstance(value, ParamExpr) else value)
    if not math.isfinite(number):
        raise QasmError(f"angle {number!r} cannot be written in OpenQASM")
    return repr(number)

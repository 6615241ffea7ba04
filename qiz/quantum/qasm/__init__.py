"""OpenQASM 3 (and 2) in and out: ``load``/``loads`` read a program into a ``Circuit``,
``dumps`` writes one back. ``codec`` holds them, ``importer`` walks the reference parser's AST,
``expr`` evaluates gate-parameter expressions. The one part that needs ``openqasm3``."""

from qiz.quantum.qasm.codec import dumps, load, loads
from qiz.quantum.qasm.limits import QasmLimits
from qiz.quantum.qasm.program import DynamicProgram

__all__ = ["DynamicProgram", "QasmLimits", "dumps", "load", "loads"]

"""docs/security.md's table of limits is the one place a reader finds every bound a peer or a
user runs into. These tests keep it true: every row names a real constant or config default
with its real value, and every ``MAX_*`` constant and ``max_*`` config field in ``qiz/`` has a
row, so a limit cannot be added, changed or removed without the document following."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import operator
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"
ROW = re.compile(r"^\|\s*`(qiz\.[\w.]+)`\s*\|\s*`([^`]+)`\s*\|")
CONSTANT = re.compile(r"^(MAX_\w+|\w*_LIMIT|DEFAULT_MAX_\w+)\s*(?::[^=]+)?=", re.MULTILINE)
CONFIG_CLASS = re.compile(r"^class (\w*(?:Config|Limits))\b", re.MULTILINE)

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
    ast.LShift: operator.lshift,
    ast.USub: operator.neg,
}


def arithmetic(text: str) -> float:
    """The value of a table cell such as ``64 * 1024`` or ``1 << 20``: numbers and arithmetic
    only, so the document can say a value the way the code does."""

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError(f"not arithmetic: {text!r}")

    return value(ast.parse(text, mode="eval").body)


def resolve(path: str) -> object:
    """``qiz.a.b.NAME`` or ``qiz.a.b.Config.field``: import the longest module prefix, then
    read attributes (a dataclass field's default for a config class)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if dataclasses.is_dataclass(target) and isinstance(target, type):
                fields = {f.name: f for f in dataclasses.fields(target)}
                if name in fields:
                    target = fields[name].default
                    continue
            target = getattr(target, name)
        return target
    raise AssertionError(f"no module for {path}")


def documented() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def defined() -> set[str]:
    """Every limit the code defines: module-level MAX_* constants and the max_* fields of
    its Config/Limits dataclasses (the simulator's are not a node's, so not here)."""
    names: set[str] = set()
    for file in sorted((ROOT / "qiz").rglob("*.py")):
        if "sim" in file.relative_to(ROOT).parts:
            continue
        module = ".".join(file.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        text = file.read_text()
        names |= {f"{module}.{m.group(1)}" for m in CONSTANT.finditer(text)}
        for cls in CONFIG_CLASS.finditer(text):
            body = text[cls.end() :].split("\nclass ", 1)[0].split("\ndef ", 1)[0]
            names |= {
                f"{module}.{cls.group(1)}.{m.group(1)}"
                for m in re.finditer(r"^    (max_\w+)\s*:", body, re.MULTILINE)
            }
    return names


def test_every_row_names_a_real_limit_with_its_real_value() -> None:
    rows = documented()
    assert len(rows) > 40, "the table of limits is missing from docs/security.md"
    wrong = []
    for path, text in rows.items():
        actual = resolve(path)
        expected = arithmetic(text)
        if not isinstance(actual, int | float) or actual != pytest.approx(expected):
            wrong.append(f"{path}: doc says {text} = {expected}, code has {actual!r}")
    assert not wrong, "\n".join(wrong)


def test_every_limit_in_the_code_is_documented() -> None:
    missing = sorted(defined() - set(documented()))
    assert not missing, "limits without a row in docs/security.md:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    ("text", "value"), [("64 * 1024", 65536), ("1 << 20", 1 << 20), ("2**63 - 1", 2**63 - 1)]
)
def test_cells_are_read_as_arithmetic(text: str, value: int) -> None:
    assert arithmetic(text) == value


def test_a_cell_that_is_not_arithmetic_is_refused() -> None:
    with pytest.raises(ValueError, match="not arithmetic"):
        arithmetic("__import__('os')")

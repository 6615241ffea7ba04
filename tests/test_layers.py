"""The house's layering (DESIGN.md, "The house"), checked on every import in qiz/.

A module may import only from its own layer or the layers below it; packages never import each
other in a cycle; the quantum processor never touches the network; the sans-IO protocol cores
never import asyncio or socket (so the simulator runs the same code as a live node). Imports
under ``if TYPE_CHECKING:`` do not run and are not counted; imports inside functions are.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "qiz"

# lowest first; a part may import its own layer and any layer listed before it
LAYERS: list[set[str]] = [
    {"qiz", "crypto", "wire"},
    {"identity", "fsio", "lifeline", "ratelimit", "allocator"},
    {"events", "event_log", "tasks", "trust", "home", "history", "peer_ref", "peer_memory"},
    {"qmp"},
    {"resolve"},
    {"quantum"},
    {"compute", "store", "deploy", "ml", "integrations"},
    {"sim"},
    {"node_api", "control"},
    {"node"},
    {"web", "cli", "client", "demo", "demo_mesh", "demo_quantum", "procs", "__main__"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
PURE = {"crypto", "wire"}
NETWORK = {"asyncio", "socket", "aiohttp", "ssl"}
SANS_IO = [
    "qmp/connection.py",
    "qmp/handshake.py",
    "qmp/channel.py",
    "qmp/frames.py",
    "resolve/lookup.py",
    "resolve/routing.py",
    "compute/core.py",
    "compute/actions.py",
    "deploy/supervisor_core.py",
    "qmp/circuit.py",
    "qmp/relay.py",
    "qmp/observed.py",
    "trust/latency.py",
]


def part_of(path: Path) -> str:
    relative = path.relative_to(ROOT).parts
    if len(relative) == 1:
        name = relative[0].removesuffix(".py")
        return "qiz" if name == "__init__" else name
    return relative[0]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import that runs (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for inner in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def target_part(module: str) -> str | None:
    if module == "qiz":
        return "qiz"
    if not module.startswith("qiz."):
        return None
    return module.split(".")[1]


def all_modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_part_has_a_layer() -> None:
    unknown = {part_of(p) for p in all_modules()} - set(RANK)
    assert not unknown, f"give these parts a layer in tests/test_layers.py: {sorted(unknown)}"


def test_no_import_points_up() -> None:
    wrong = []
    for path in all_modules():
        here = part_of(path)
        for line, module in imports(path):
            there = target_part(module)
            if there is None or there == here or there not in RANK:
                continue
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            if RANK[there] > RANK[here]:
                wrong.append(f"{where}: {here} imports {module} (a higher layer)")
            if here in PURE and there not in PURE and there != "qiz":
                wrong.append(f"{where}: {here} is pure and imports {module}")
            if here == "quantum" and there not in {"quantum", "qiz", *PURE}:
                wrong.append(f"{where}: quantum imports {module}")
    assert not wrong, "\n".join(wrong)


def test_no_cycle_between_parts() -> None:
    edges: dict[str, set[str]] = {}
    for path in all_modules():
        here = part_of(path)
        for _, module in imports(path):
            there = target_part(module)
            if there is not None and there != here:
                edges.setdefault(here, set()).add(there)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if a < b and reaches(b, a))
    assert not cycles, cycles


def test_quantum_and_protocol_cores_never_touch_the_network() -> None:
    """Nor does qiz.ml: its estimators are pure computation on top of qiz.quantum."""
    wrong = []
    for path in all_modules():
        relative = str(path.relative_to(ROOT))
        core = relative in SANS_IO
        if part_of(path) not in ("quantum", "ml") and not core:
            continue
        for line, module in imports(path):
            if module.split(".")[0] in NETWORK:
                wrong.append(f"qiz/{relative}:{line}: imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself must be able to fail: a planted upward import is found."""
    planted = tmp_path / "bad.py"
    planted.write_text("import asyncio\nfrom qiz.node import Node\n")
    found = [module for _, module in imports(planted)]
    assert found == ["asyncio", "qiz.node"]
    assert RANK[target_part("qiz.node")] > RANK["crypto"]


def test_sans_io_cores_load_no_event_loop_or_socket_even_indirectly() -> None:
    """Importing a protocol core (and everything it imports) must not load asyncio or socket:
    the simulator drives the very same modules."""
    import subprocess
    import sys

    modules = [f"qiz.{path.removesuffix('.py').replace('/', '.')}" for path in SANS_IO]
    modules.append("qiz.events")
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('asyncio', 'socket') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"

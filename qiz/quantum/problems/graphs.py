"""Graphs for MaxCut: edge-list files and seeded random regular graphs.

Every graph here becomes a QUBO of one qubit per node, so a graph is bounded by nodes before
anything is built: a name like ``random:2000000,2`` (16 bytes from a peer) is refused by what it
says, not after networkx built it; an edge list is refused at the first node beyond the bound.
Callers with a tighter qubit limit pass it as ``max_nodes``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from qiz.quantum.core.errors import QuantumError
from qiz.quantum.core.files import read_text
from qiz.quantum.core.memory import MAX_QUBITS
from qiz.quantum.core.names import shown, whole

MAX_GRAPH_BYTES = 16 << 20
# nodes of any graph read or generated here: one qubit each, and no state beyond MAX_QUBITS is
# ever simulated; it also bounds the edges (at most N(N-1)/2, each once) before they are built
MAX_GRAPH_NODES = MAX_QUBITS
# degree of a random:N,D graph: networkx's pairing retries grow steeply as D nears N (at 34
# nodes, degree 32 took 1.2-2.8 s to generate, degree 16 at most 0.05 s over 20 seeds)
MAX_RANDOM_DEGREE = 16


@dataclass(frozen=True)
class Graph:
    """Nodes 0..num_nodes-1 and weighted undirected edges."""

    num_nodes: int
    edges: tuple[tuple[int, int], ...]
    weights: tuple[float, ...]

    def cut_value(self, index: int) -> float:
        return sum(
            w
            for (u, v), w in zip(self.edges, self.weights, strict=True)
            if ((index >> u) & 1) != ((index >> v) & 1)
        )


def parse_edge_list(text: str, source: str = "<graph>", max_nodes: int = MAX_GRAPH_NODES) -> Graph:
    """Lines 'u v' or 'u v weight' with integer nodes from 0 to ``max_nodes - 1``; '#' starts
    a comment."""
    edges: dict[tuple[int, int], float] = {}
    top = -1
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        parts = line.replace(",", " ").split()
        if len(parts) not in (2, 3):
            raise QuantumError(f"{where}: expected 'u v' or 'u v weight'")
        u, v = whole(parts[0], max_nodes - 1), whole(parts[1], max_nodes - 1)
        if u is None or v is None:
            raise QuantumError(
                f"{where}: nodes must be integers from 0 to {max_nodes - 1} "
                f"(at most {max_nodes} nodes, one qubit each)"
            )
        try:
            w = float(parts[2]) if len(parts) == 3 else 1.0
        except ValueError:
            raise QuantumError(f"{where}: {shown(parts[2])} is not a weight") from None
        if u == v:
            raise QuantumError(f"{where}: self-loop on node {u}")
        if not math.isfinite(w):
            raise QuantumError(f"{where}: the weight must be a finite number")
        key = (min(u, v), max(u, v))
        if key in edges:
            raise QuantumError(f"{where}: edge {u}-{v} appears twice")
        edges[key] = w
        top = max(top, u, v)
    if not edges:
        raise QuantumError(f"{source}: no edges")
    keys = sorted(edges)
    return Graph(top + 1, tuple(keys), tuple(edges[k] for k in keys))


def load_graph(spec: str, seed: int | None = 0, max_nodes: int = MAX_GRAPH_NODES) -> Graph:
    """``random:N,D`` (a seeded random D-regular graph on N nodes) or an edge-list file; N is
    checked against ``max_nodes`` (and D against MAX_RANDOM_DEGREE) before the graph is built."""
    if spec.startswith("random:"):
        parts = [p.strip() for p in spec.removeprefix("random:").split(",")]
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
            raise QuantumError(f"graph {shown(spec)}: expected random:N,D (e.g. random:20,3)")
        n, d = whole(parts[0], max_nodes), whole(parts[1], MAX_RANDOM_DEGREE)
        if n is None:
            raise QuantumError(f"graph {shown(spec)}: at most {max_nodes} nodes (one qubit each)")
        if d is None:
            raise QuantumError(f"graph {shown(spec)}: the degree is at most {MAX_RANDOM_DEGREE}")
        return random_regular(n, d, seed, max_nodes)
    text = read_text(
        spec, max_size=MAX_GRAPH_BYTES, kind="an edge list", missing_hint="or use random:N,D"
    )
    return parse_edge_list(text, os.fspath(Path(spec)), max_nodes)


def random_regular(n: int, d: int, seed: int | None, max_nodes: int = MAX_GRAPH_NODES) -> Graph:
    """A seeded random ``d``-regular graph on ``n`` nodes, both bounded before it is built."""
    import networkx as nx

    if n > max_nodes:
        raise QuantumError(f"a random graph has at most {max_nodes} nodes (one qubit each)")
    if d > MAX_RANDOM_DEGREE:
        raise QuantumError(f"a random regular graph has degree at most {MAX_RANDOM_DEGREE}")
    if d < 1 or d >= n or (n * d) % 2:
        raise QuantumError(f"no {d}-regular graph on {n} nodes: need 1 <= D < N and N*D even")
    g = nx.random_regular_graph(d, n, seed=seed)
    edges = tuple(sorted((min(u, v), max(u, v)) for u, v in g.edges()))
    return Graph(n, edges, tuple(1.0 for _ in edges))

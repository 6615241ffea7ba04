"""Graphs for MaxCut: edge-list files and seeded random regular graphs."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from qiz.quantum.core.errors import QuantumError
from qiz.quantum.core.files import read_text

MAX_GRAPH_BYTES = 16 << 20


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


def parse_edge_list(text: str, source: str = "<graph>") -> Graph:
    """Lines 'u v' or 'u v weight' with integer nodes from 0; '#' starts a comment."""
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
        try:
            u, v = int(parts[0]), int(parts[1])
        except ValueError:
            raise QuantumError(f"{where}: nodes must be integers from 0") from None
        try:
            w = float(parts[2]) if len(parts) == 3 else 1.0
        except ValueError:
            raise QuantumError(f"{where}: {parts[2]!r} is not a weight") from None
        if u < 0 or v < 0:
            raise QuantumError(f"{where}: nodes must be integers from 0")
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


def load_graph(spec: str, seed: int | None = 0) -> Graph:
    """``random:N,D`` (a seeded random D-regular graph on N nodes) or an edge-list file."""
    if spec.startswith("random:"):
        body = spec.removeprefix("random:")
        parts = body.split(",")
        if len(parts) != 2 or not all(p.strip().isdecimal() for p in parts):
            raise QuantumError(f"graph {spec!r}: expected random:N,D (e.g. random:20,3)")
        n, d = int(parts[0]), int(parts[1])
        return random_regular(n, d, seed)
    text = read_text(
        spec, max_size=MAX_GRAPH_BYTES, kind="an edge list", missing_hint="or use random:N,D"
    )
    return parse_edge_list(text, os.fspath(Path(spec)))


def random_regular(n: int, d: int, seed: int | None) -> Graph:
    import networkx as nx

    if d < 1 or d >= n or (n * d) % 2:
        raise QuantumError(f"no {d}-regular graph on {n} nodes: need 1 <= D < N and N*D even")
    g = nx.random_regular_graph(d, n, seed=seed)
    edges = tuple(sorted((min(u, v), max(u, v)) for u, v in g.edges()))
    return Graph(n, edges, tuple(1.0 for _ in edges))

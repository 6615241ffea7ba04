"""The targets shipped with qiz (``qiz/quantum/data/targets/<name>.json``), and finding one.

``load(name_or_path)`` takes a shipped name (``fake_sherbrooke``) or the path of a target file
(anything with a ``/`` or ending in ``.json``). The shipped files were written by
``bench/gen_targets.py`` from ``qiskit-ibm-runtime``'s fake backends; reading them needs no qiskit.
"""

from __future__ import annotations

import functools
from pathlib import Path

from qiz.quantum.targets.device import Target
from qiz.quantum.targets.errors import TargetError

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "targets"


def names() -> list[str]:
    """The shipped targets' names, sorted."""
    return sorted(p.stem for p in DATA_DIR.glob("*.json"))


@functools.cache
def _shipped(name: str) -> Target:
    return Target.load(DATA_DIR / f"{name}.json")


def load(name_or_path: str) -> Target:
    """A shipped target by name, or a target file by path."""
    if "/" in name_or_path or name_or_path.endswith(".json"):
        return Target.load(name_or_path)
    if name_or_path not in names():
        known = ", ".join(names()) or "none installed"
        raise TargetError(
            f"unknown target {name_or_path!r} (shipped: {known}; or give a file path)"
        )
    return _shipped(name_or_path)

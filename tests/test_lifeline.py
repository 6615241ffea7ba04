"""qiz/lifeline.py's guard_memory: a process that calls it is no longer dumpable (Linux), so
other processes of its user cannot read its environment or memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import ctypes
from qiz.lifeline import guard_memory
prctl = ctypes.CDLL(None).prctl
before = prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
took = guard_memory()
print(before, took, prctl(3, 0, 0, 0, 0))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_guard_memory_makes_the_process_non_dumpable() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["1", "True", "0"]

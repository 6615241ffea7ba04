"""The link benchmarks' harness without measuring anything: ``bench/qmp.py`` and
``bench/dht_procs.py`` refuse a busy machine for a full run, and the process-spread DHT mesh
runs end to end at a tiny size (real nodes in real processes, every resolve finding its
target)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import dht_procs, qmp

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("module", [qmp, dht_procs])
def test_a_full_run_is_refused_on_a_busy_machine(
    module: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = module.MAX_LOAD  # type: ignore[attr-defined]
    check = module.check_quiet  # type: ignore[attr-defined]
    monkeypatch.setattr(module.os, "getloadavg", lambda: (limit + 0.5, 0.0, 0.0))  # type: ignore[attr-defined]
    busy = rf"the machine is busy \(1-minute load average {limit + 0.5:.2f}"
    with pytest.raises(SystemExit, match=busy):
        check(quick=False, busy_ok=False)
    assert check(quick=False, busy_ok=True) == limit + 0.5
    assert check(quick=True, busy_ok=False) == limit + 0.5
    monkeypatch.setattr(module.os, "getloadavg", lambda: (0.2, 0.0, 0.0))  # type: ignore[attr-defined]
    assert check(quick=False, busy_ok=False) == 0.2


def test_a_small_mesh_over_two_processes_resolves_every_target() -> None:
    latencies, cpu = dht_procs.mesh(processes=2, per_process=3, resolves=8)
    # sources and targets as bench/dht.py picks them: i % 6 and (7 i + 3) % 6, never equal here
    assert len(latencies) == 8
    assert all(t > 0 for t in latencies) and cpu > 0

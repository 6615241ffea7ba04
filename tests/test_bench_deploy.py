"""The deploy benchmark's harness (``bench/deploy.py``) without a mesh: the bundles it
publishes are valid bundles (the crashing one too), and its TUF figures come from a real
channel verified by the real follower."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import deploy
from qiz.deploy.bundle import load_bundle


def test_the_bundles_it_publishes_parse_and_carry_fresh_bytes(tmp_path: Path) -> None:
    deploy.write_bundle(tmp_path / "v1", "1", 2 * deploy.MIB)
    deploy.write_bundle(tmp_path / "v3", "3", 2 * deploy.MIB, crash=True)
    one, three = load_bundle(tmp_path / "v1"), load_bundle(tmp_path / "v3")
    assert (one.name, one.version, three.version) == ("bench", "1", "3")
    assert one.restart.max_starts == deploy.MAX_STARTS
    assert "sys.exit" in (tmp_path / "v3" / "app.py").read_text()
    assert "sleep" in (tmp_path / "v1" / "app.py").read_text()
    v1 = (tmp_path / "v1" / "data.bin").read_bytes()
    v3 = (tmp_path / "v3" / "data.bin").read_bytes()
    assert len(v1) == 2 * deploy.MIB and v1 != v3


def test_running_means_the_version_is_current_and_its_process_up() -> None:
    assert deploy.running({"current": "2", "state": "healthy"}, "2")
    assert deploy.running({"current": "2", "state": "running"}, "2")
    assert not deploy.running({"current": "2", "state": "backoff"}, "2")
    assert not deploy.running({"current": "1", "state": "running"}, "2")


def test_tuf_figures_verify_a_real_chain(tmp_path: Path) -> None:
    figures = deploy.tuf_figures(tmp_path, quick=True)
    assert [f.unit for f in figures] == ["ms", "ms"]
    assert all(f.value > 0 for f in figures)

"""The storage benchmark's harness (``bench/store.py``) without measuring the pool: the busy
machine's refusal, the RSS sampler on a process that grows, the comparison lines under the
table, and ``bench/report.py --only store`` putting its section in the page exactly once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness, report, store
from bench.harness import Figure


def test_a_full_run_is_refused_on_a_busy_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store.os, "getloadavg", lambda: (harness.MAX_LOAD + 0.5, 0.0, 0.0))
    busy = rf"the machine is busy \(1-minute load average {harness.MAX_LOAD + 0.5:.2f}"
    with pytest.raises(SystemExit, match=busy):
        store.check_quiet(quick=False, busy_ok=False)
    assert store.check_quiet(quick=False, busy_ok=True) == harness.MAX_LOAD + 0.5
    assert store.check_quiet(quick=True, busy_ok=False) == harness.MAX_LOAD + 0.5
    monkeypatch.setattr(store.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert store.check_quiet(quick=False, busy_ok=False) == 0.2


def test_the_rss_sampler_sees_a_process_grow() -> None:
    grow = "import sys, time; sys.stdin.readline(); b = bytearray(48 << 20); time.sleep(0.5)"
    proc = subprocess.Popen([sys.executable, "-c", grow], stdin=subprocess.PIPE)
    try:
        time.sleep(0.3)  # the interpreter is up and waiting
        with store.RssSampler(proc.pid) as sampler:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            time.sleep(0.4)
        assert sampler.base > 0
        assert 44 << 20 <= sampler.growth <= 64 << 20
    finally:
        proc.kill()
        proc.wait()


def figures() -> list[Figure]:
    extra = {"load_average_1min": 0.3, "load_average_1min_end": 0.4}
    return [
        Figure("beside the pool", "one QMP link, bulk (256 MiB)", 400.0, "MB/s", extra=extra),
        Figure("pool, 5 holders", "put 256 MiB", 100.0, "MB/s", extra={"vs_qmp_link": 0.25}),
        Figure("pool, 5 holders", "get 256 MiB", 240.0, "MB/s", extra={"vs_qmp_link": 0.6}),
        Figure("pool, 5 holders", "getting node's peak RSS growth, 256 MiB get", 21.5, "MiB"),
    ]


def test_the_table_says_how_the_largest_put_and_get_compare_with_one_link() -> None:
    text = store.markdown(figures())
    assert "| pool, 5 holders | get 256 MiB | 240.000 MB/s |" in text
    assert (
        "get 256 MiB: 60% of one QMP link (expected at least 50%); put 256 MiB: 25% "
        "(expected at least 33%); RSS growth 21.5 MiB (expected under 64 MiB)."
    ) in text
    assert "Load average (1 min) at the start 0.3, at the end 0.4" in text


def test_only_store_puts_its_section_in_the_page_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "benchmarks.md"
    before = "# Benchmarks\n\n## Distributed jobs (`bench/jobs.py`)\n\njobs table\n"
    page.write_text(before)
    monkeypatch.setattr(report, "DOCS", page)
    monkeypatch.setattr(store, "run", lambda quick, busy_ok, cold: figures())
    monkeypatch.setattr(sys, "argv", ["report.py", "--only", "store"])
    report.main()
    first = page.read_text()
    assert first.startswith(before.rstrip("\n"))
    assert first.count(report.STORE_HEADING.strip()) == 1 and "60% of one QMP link" in first
    report.main()  # again: the section is replaced, not added twice
    assert page.read_text() == first

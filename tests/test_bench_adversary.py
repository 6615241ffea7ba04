"""The report's adversary section (``bench/report.py --only adversary``): the adversarial
suite's table and adaptive replication's, with issue 19's goals, at a tiny size in this
process; it replaces its own section of the page and nothing else.

No figure is asserted: they are measured (counts in simulated time), never tested here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report

pytestmark = pytest.mark.timeout(300)

TINY = {
    "nodes": 100,
    "users": 3,
    "lookups": 2,
    "rounds": 2,
    "jobs": 30,
    "holders": 30,
    "owners": 2,
    "contents": 2,
    "store_rounds": 2,
    "eclipse_tries": 1 << 12,
}


@pytest.fixture(scope="module")
def section() -> str:
    return report.adversary_section(True, True, sized=TINY, jobs=30, workers=1)


def test_the_section_has_both_tables_and_every_goal_with_a_verdict(section: str) -> None:
    assert section.startswith(report.ADVERSARY_HEADING)
    assert "A --quick run (smoke test, not a measurement)" in section
    # the suite: one line per scenario row (3 sybil, 4 eclipse, 6 jobs, 3 x 3 more)
    for scenario, rows in (("1 sybil flood", 3), ("2 eclipse", 4), ("3 colluding liars", 6)):
        assert section.count(f"| {scenario} |") == rows, scenario
    for scenario in ("4 slow and silent", "5 record poisoning", "6 bad storage holders"):
        assert section.count(f"| {scenario} |") == 3, scenario
    # adaptive replication: plain and adaptive at 10, 20 and 30%
    for liars in ("10%", "20%", "30%"):
        assert f"| {liars} | plain 2 |" in section and f"| {liars} | adaptive |" in section
    goals = [line for line in section.splitlines() if line.startswith("- ") and "goal" in line]
    assert len(goals) == 3, goals  # DHT at 20% and 30%, jobs at 30%
    assert all(line.endswith((": met.", ": NOT met.")) for line in goals), goals
    assert "- Forged records accepted: none in any row." in section


def test_only_adversary_replaces_its_own_section_once(
    section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "benchmarks.md"
    before = "# Benchmarks\n\n## Quantum simulators (`bench/quantum.py`)\n\nquantum table\n"
    after = "\n## Noisy simulation (`bench/noise.py`)\n\nnoise table\n"
    page.write_text(before)
    monkeypatch.setattr(report, "DOCS", page)
    monkeypatch.setattr(report, "adversary_section", lambda quick, busy_ok: section)
    monkeypatch.setattr(sys, "argv", ["report.py", "--only", "adversary", "--busy-ok"])
    report.main()
    first = page.read_text()
    assert first.startswith(before.rstrip("\n"))
    assert first.count(report.ADVERSARY_HEADING.strip()) == 1
    page.write_text(first + after)  # a later section must survive a rerun
    report.main()
    again = page.read_text()
    assert again == first + after  # its own section replaced, the one after it untouched


def test_an_unknown_section_name_lists_adversary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["report.py", "--only", "frob"])
    with pytest.raises(SystemExit, match="client or adversary"):
        report.main()

"""The README's tour, run as written: the shell block under "A short tour" is extracted from
README.md itself (so the test and the README cannot drift) and run by bash from the clone's
root, with real node processes on loopback.

The tour's ``T=$(mktemp -d)`` lands in this test's temporary folder (``TMPDIR``), and every
process it starts carries a marker in its environment (the ``tagged_env`` fixture), so whatever
the tour leaves running (a detached node after a failed step) is found and killed afterwards.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def tour_block() -> str:
    """The first ```sh block after the README's "A short tour" heading."""
    text = README.read_text()
    heading = text.index("## A short tour")
    match = re.compile(r"```sh\n(.*?)```", re.S).search(text, heading)
    assert match is not None, "README: no ```sh block after '## A short tour'"
    return match.group(1)


def test_the_tour_block_is_found_and_uses_the_examples() -> None:
    block = tour_block()
    assert block.startswith(". .venv/bin/activate")
    for name in re.findall(r"examples/([\w.]+)", block):
        assert (ROOT / "examples" / name).is_file(), f"the tour reads examples/{name}: missing"
    # no placeholder a reader would have to fill in by hand (comments may name the forms)
    commands = "\n".join(line.split("  #", 1)[0] for line in block.splitlines())
    for placeholder in ("qizn1...", "JOBID", ":PORT", "ADDR"):
        assert placeholder not in commands, placeholder


@pytest.mark.timeout(600)
def test_the_readme_tour_runs_as_written(tmp_path: Path, tagged_env: dict[str, str]) -> None:
    if not (ROOT / ".venv" / "bin" / "activate").exists():
        pytest.fail("the tour activates .venv: run the tests through 'make test'")
    script = (
        "set -eEuo pipefail\n"
        "trap 'echo \"tour failed at line $LINENO: $BASH_COMMAND\" >&2' ERR\n" + tour_block()
    )
    done = subprocess.run(  # whatever it leaves running, tagged_env kills
        ["bash", "-c", script],
        cwd=ROOT,
        env={**tagged_env, "TMPDIR": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    tail = f"\n--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-4000:]}"
    assert done.returncode == 0, tail
    assert "Traceback" not in done.stderr, tail
    out = done.stdout
    assert "hello" in out, tail  # Bob opened Alice's sealed note
    assert re.search(r"^qiz_links 1\.0$", out, re.M), tail  # the curl line read the metrics
    assert re.search(r"\b00\b", out) and re.search(r"\b11\b", out), tail  # the Bell circuit
    homes = [p for p in tmp_path.glob("tmp*/*") if (p / "config.toml").exists()]
    assert {p.name for p in homes} == {"alice", "bob", "carol"}, homes
    assert not (ROOT / "alice").exists() and not (ROOT / "bob").exists()

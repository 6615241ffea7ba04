"""The atomic installer (issue 17, item 4): real files, real fsyncs, a real child killed with
SIGKILL at random moments. ``current`` must always name a complete, verified, runnable version,
and a fresh installer must clean up and carry on."""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qiz import CheckFailed
from qiz.deploy import install as install_module
from qiz.deploy.install import Installer, verify_version
from qiz.deploy.layout import LEFTOVER_PREFIXES, STAGING_PREFIX
from qiz.deploy.runtime_errors import (
    BundleFilesMismatch,
    BundleTooLarge,
    FileHashMismatch,
    InstallerBusy,
    NoPreviousVersion,
    UnsafeBundlePath,
    UnsafeName,
    VersionConflict,
    VersionMarkedBad,
)
from tests.helpers import CLEAN_ENV


def bundle(version: str, extra: int = 0) -> tuple[dict[str, bytes], dict[str, str]]:
    """A tiny runnable bundle: run.py prints its version."""
    files = {"run.py": f"print({version!r})\n".encode(), "lib/data.txt": b"x" * 100}
    for k in range(extra):
        files[f"blobs/{k}.bin"] = os.urandom(4096)
    return files, table(files)


def table(files: dict[str, bytes]) -> dict[str, str]:
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


def run_current(app: Path) -> str:
    """What the version ``current`` points at prints when run."""
    out = subprocess.run(
        [sys.executable, "run.py"], cwd=app / "current", capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text
    return text


def test_install_switch_rollback_and_prune(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    assert inst.current() is None and inst.previous() is None
    for version in ("1.0", "2.0", "3.0"):
        inst.install(version, *bundle(version))
        assert inst.current() == version
        assert run_current(tmp_path / "app") == version
    assert inst.previous() == "2.0"
    assert not os.access(inst.path("3.0") / "run.py", os.W_OK) or os.geteuid() == 0
    assert (inst.path("3.0") / "run.py").stat().st_mode & 0o777 == 0o444

    assert inst.rollback() == "2.0"
    assert run_current(tmp_path / "app") == "2.0"
    assert inst.bad() == {"3.0"} and inst.previous() == "1.0"
    with pytest.raises(VersionMarkedBad) as exc:
        inst.install("3.0", *bundle("3.0"))
    assert "3.0" in one_line(exc)
    inst.install("3.0", *bundle("3.0"), allow_bad=True)  # asked for explicitly
    assert inst.current() == "3.0" and inst.bad() == set()

    assert inst.prune(keep=1) == ["1.0"]
    assert inst.installed() == ["2.0", "3.0"]
    assert inst.rollback() == "2.0"
    with pytest.raises(NoPreviousVersion) as exc:
        inst.rollback()
    assert "no earlier good version" in one_line(exc)
    assert inst.current() == "2.0"


def test_same_version_is_idempotent_and_immutable(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    files, expected = bundle("1.0")
    inst.install("1.0", files, expected)
    inst.install("1.0", files, expected)  # same bytes: nothing to do
    other = dict(files, **{"run.py": b"print('evil')\n"})
    with pytest.raises(VersionConflict) as exc:
        inst.install("1.0", other, table(other))
    assert "already installed" in one_line(exc)
    assert run_current(tmp_path / "app") == "1.0"


@pytest.mark.parametrize(
    "path",
    [
        "../escape.py",
        "a/../../escape",
        "/etc/passwd",
        "a//b",
        "./a",
        "a\\b",
        "",
        ".qiz-install.json",
    ],
)
def test_unsafe_paths_are_refused(tmp_path: Path, path: str) -> None:
    inst = Installer(tmp_path, "app")
    files = {"run.py": b"print(1)\n", path: b"evil"}
    with pytest.raises(UnsafeBundlePath) as exc:
        inst.install("1.0", files, table(files))
    one_line(exc)
    assert inst.installed() == [] and inst.current() is None
    assert not (tmp_path / "escape.py").exists()


@pytest.mark.parametrize("version", ["../x", ".hidden", "current", "a/b", "", "x" * 200])
def test_unsafe_version_names_are_refused(tmp_path: Path, version: str) -> None:
    with pytest.raises(UnsafeName) as exc:
        Installer(tmp_path, "app").install(version, *bundle("1.0"))
    one_line(exc)
    with pytest.raises(UnsafeName):
        Installer(tmp_path, version or "..")


def test_hash_mismatch_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    inst.install("1.0", *bundle("1.0"))
    files, expected = bundle("2.0")
    files["lib/data.txt"] = b"y" * 100  # tampered after the table was signed
    with pytest.raises(FileHashMismatch) as exc:
        inst.install("2.0", files, expected)
    assert "lib/data.txt" in one_line(exc)
    assert isinstance(exc.value, CheckFailed)
    assert inst.installed() == ["1.0"] and inst.current() == "1.0"
    assert not [n for n in os.listdir(inst.dir) if n.startswith(LEFTOVER_PREFIXES)]


def test_missing_and_extra_files_are_refused(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    files, expected = bundle("1.0")
    with pytest.raises(BundleFilesMismatch) as exc:
        inst.install("1.0", {"run.py": files["run.py"]}, expected)
    assert "missing" in one_line(exc)
    with pytest.raises(BundleFilesMismatch) as exc:
        inst.install("1.0", {**files, "more.py": b""}, expected)
    assert "not in the verified file list" in one_line(exc)
    with pytest.raises(BundleFilesMismatch):
        inst.install("1.0", files, {**expected, "run.py": "not-a-hash"})


def test_declared_sizes_are_enforced(tmp_path: Path) -> None:
    """A file longer or shorter than the verified metadata declares is refused (the table
    from TUF has each file's length as well as its hash)."""
    inst = Installer(tmp_path, "app")
    files, expected = bundle("1.0")
    sizes = {rel: len(data) for rel, data in files.items()}
    with pytest.raises(BundleFilesMismatch) as exc:
        inst.install("1.0", files, expected, sizes={**sizes, "lib/data.txt": 10})
    assert "longer than its 10 bytes" in one_line(exc)
    with pytest.raises(BundleFilesMismatch) as exc:
        inst.install("1.0", files, expected, sizes={**sizes, "run.py": 1000})
    assert "not 1000" in one_line(exc)
    with pytest.raises(BundleTooLarge):
        inst.install("1.0", files, expected, sizes={**sizes, "run.py": 1 << 40})
    assert inst.installed() == []
    inst.install("1.0", files, expected, sizes=sizes)
    assert inst.current() == "1.0"


def test_size_and_count_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = Installer(tmp_path, "app")
    monkeypatch.setattr(install_module, "MAX_INSTALL_BYTES", 1000)
    with pytest.raises(BundleTooLarge) as exc:
        inst.install("1.0", *bundle("1.0", extra=1))
    one_line(exc)
    monkeypatch.setattr(install_module, "MAX_INSTALL_FILES", 2)
    with pytest.raises(BundleTooLarge):
        inst.install("1.0", *bundle("1.0", extra=1))
    assert inst.installed() == []


def test_a_source_directory_with_a_symlink_or_fifo_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "bin").mkdir(parents=True)
    (source / "run.py").write_text("print('dir')\n")
    (source / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (source / "bin" / "tool").chmod(0o755)
    files = {"run.py": b"print('dir')\n", "bin/tool": b"#!/bin/sh\necho tool\n"}
    inst = Installer(tmp_path / "deploy", "app")
    inst.install_from_dir("1.0", source, table(files))
    assert os.access(inst.path("1.0") / "bin" / "tool", os.X_OK)
    assert run_current(inst.dir) == "dir"

    (source / "link").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeBundlePath) as exc:
        inst.install_from_dir("2.0", source, {**table(files), "link": "0" * 64})
    assert "symlink" in one_line(exc)
    (source / "link").unlink()
    os.mkfifo(source / "pipe")
    with pytest.raises(UnsafeBundlePath) as exc:
        inst.install_from_dir("2.0", source, {**table(files), "pipe": "0" * 64})
    assert "not a regular file" in one_line(exc)
    assert inst.installed() == ["1.0"]


def test_verify_sees_tampering(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    inst.install("1.0", *bundle("1.0"))
    inst.verify("1.0")
    target = inst.path("1.0") / "lib" / "data.txt"
    target.chmod(0o644)
    target.write_bytes(b"z" * 100)
    with pytest.raises(FileHashMismatch):
        inst.verify("1.0")
    target.unlink()
    with pytest.raises(BundleFilesMismatch):
        inst.verify("1.0")


def test_recover_finishes_a_switch_the_journal_recorded(tmp_path: Path) -> None:
    """A kill between the journal write and the link rename: the next installer completes it."""
    inst = Installer(tmp_path, "app")
    inst.install("1.0", *bundle("1.0"))
    inst.install("2.0", *bundle("2.0"), switch=False)
    assert inst.current() == "1.0"
    state = inst.state()
    state.history.append("2.0")
    inst._write_state(state)  # the journal says 2.0; the link still says 1.0
    (inst.dir / f"{STAGING_PREFIX}dead").mkdir(mode=0o555)
    (inst.dir / ".current-dead").symlink_to("1.0")
    (inst.dir / ".trash-dead" / "sub").mkdir(parents=True)
    again = Installer(tmp_path, "app")
    assert again.current() == "2.0" and again.previous() == "1.0"
    assert sorted(again.removed_leftovers) == [
        ".current-dead",
        f"{STAGING_PREFIX}dead",
        ".trash-dead",
    ]
    assert again.installed() == ["1.0", "2.0"]


def test_a_lost_journal_is_rebuilt_from_current(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    inst.install("1.0", *bundle("1.0"))
    inst.install("2.0", *bundle("2.0"))
    inst.dirs.state.write_bytes(b"\x00 not json")
    again = Installer(tmp_path, "app")
    assert again.current() == "2.0" and again.state().history == ["2.0"]
    with pytest.raises(NoPreviousVersion):
        again.rollback()  # what it was is lost with the journal; current still runs
    assert run_current(again.dir) == "2.0"


def test_a_second_process_holding_the_lock_makes_it_busy(tmp_path: Path) -> None:
    inst = Installer(tmp_path, "app")
    inst.dir.mkdir()
    fd = os.open(inst.dirs.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: as another process
        with pytest.raises(InstallerBusy) as exc:
            inst.install("1.0", *bundle("1.0"))
        one_line(exc)
    finally:
        os.close(fd)
    inst.install("1.0", *bundle("1.0"))


CHILD = """
import hashlib, os, sys
from pathlib import Path
from qiz.deploy.install import Installer
print("go", flush=True)
root, tag = Path(sys.argv[1]), sys.argv[2]
inst = Installer(root, "app")
n = 0
while True:
    n += 1
    version = f"{tag}.{n}"
    files = {"run.py": f"print({version!r})\\n".encode()}
    files.update({f"blobs/{k}.bin": os.urandom(8192) for k in range(40)})
    inst.install(version, files, {r: hashlib.sha256(d).hexdigest() for r, d in files.items()})
    if n % 3 == 0:
        inst.rollback()
    inst.prune(keep=2)
"""


def test_kill_9_at_random_moments_never_breaks_current(tmp_path: Path) -> None:
    """20 times: a child installs, rolls back and prunes in a loop and is SIGKILLed at a random
    moment. Each time, before any recovery, ``current`` names a complete version that verifies
    and runs; at the end a fresh installer removes the leftovers and installs again."""
    root = tmp_path / "deploy"
    Installer(root, "app").install("0", *bundle("0"))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(17)
    seen_leftovers = 0
    for round_ in range(20):
        child = subprocess.Popen(
            [sys.executable, str(script), str(root), f"r{round_}"],
            env=CLEAN_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "go"
        try:
            child.wait(rng.uniform(0.05, 0.6))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
        child.wait(30)
        assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
        child.stdout.close()
        if child.stderr:
            child.stderr.close()

        app = root / "app"
        version = os.readlink(app / "current")
        assert not version.startswith(".") and "/" not in version
        record = verify_version(app / version)
        assert record["version"] == version
        assert run_current(app) == version
        seen_leftovers += any(n.startswith(LEFTOVER_PREFIXES) for n in os.listdir(app))

    assert seen_leftovers >= 1  # some kills did land mid-operation
    inst = Installer(root, "app")
    assert not [n for n in os.listdir(inst.dir) if n.startswith(LEFTOVER_PREFIXES)]
    assert inst.current() == inst.state().current
    for version in inst.installed():
        inst.verify(version)
    before = inst.current()
    inst.install("final", *bundle("final"))
    assert run_current(inst.dir) == "final"
    assert inst.rollback() == before
    assert run_current(inst.dir) == before

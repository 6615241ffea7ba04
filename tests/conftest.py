"""Shared fixtures: official vector files, fast identities, node processes. Plain helpers are
in tests/helpers.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import cryptography_vectors
import pytest
from hypothesis import HealthCheck, settings

from qiz.identity import NodeIdentity
from qiz.procs import NodeProcess, processes_with_env

from .helpers import CLEAN_ENV, node_processes

settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
# Fuzz targets (tests/fuzz) choose their budget by name: "fuzz" in `make test`, "fuzz-long"
# in `make fuzz` (QIZ_FUZZ_PROFILE=fuzz-long); a failure prints the blob that replays it.
SLOW_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "fuzz", max_examples=40, deadline=None, print_blob=True, suppress_health_check=SLOW_CHECKS
)
settings.register_profile(
    "fuzz-long",
    max_examples=int(os.environ.get("QIZ_FUZZ_EXAMPLES", "4000")),
    deadline=None,
    print_blob=True,
    suppress_health_check=SLOW_CHECKS,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
REPO_VECTORS = Path(__file__).resolve().parent / "vectors"


def vector_path(*parts: str) -> Path:
    return Path(cryptography_vectors.__file__).parent.joinpath(*parts)


def parse_rsp(path: Path) -> list[dict[str, str]]:
    """NIST-style ``key = value`` records, each starting at a ``count = N`` line."""
    records: list[dict[str, str]] = []
    for line in path.read_text().splitlines():
        if " = " not in line:
            continue
        key, value = line.split(" = ", 1)
        if key == "count":
            records.append({})
        records[-1][key.strip()] = value.strip()
    return records


@pytest.fixture(scope="session")
def alice() -> NodeIdentity:
    return NodeIdentity.generate()


@pytest.fixture(scope="session")
def bob() -> NodeIdentity:
    return NodeIdentity.generate()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Start ``qiz node start`` processes (homes relative to ``tmp_path``, or to ``cwd=``),
    each waited for until ready; every one's process group is killed when the test ends."""
    with node_processes(tmp_path) as start:
        yield start


TAG_VARIABLE = "QIZ_TEST_RUN"  # marks the environment of CLI runs whose leftovers are killed


@pytest.fixture
def tagged_env() -> Iterator[dict[str, str]]:
    """The CLI's environment, marked so that every process a run leaves behind (a node started
    with ``--detach``, its workers) is found by the mark and killed afterwards."""
    tag = uuid.uuid4().hex
    try:
        yield {**CLEAN_ENV, TAG_VARIABLE: tag}
    finally:
        for pid in processes_with_env(TAG_VARIABLE, tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# The process compiling the kernels only the tests' own process uses (tests/warm_kernels.py),
# started at session start and reaped at its end.
_warming: list[subprocess.Popen[bytes]] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the worker kernels once, in this process, before any node process starts. On
    a fresh checkout numba's cache is empty, and every worker process of every node a test
    starts at once would compile the same kernels side by side (about 20 s of CPU each: ten
    processes of a five-node demo took the machine for a minute); compiled once here, they
    all load the cache. Meanwhile a process of its own compiles, on the other core, the
    kernels that tests compile in this process (tests/warm_kernels.py)."""
    from qiz.compute import execute

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # run as a background job of a script (`make test &`, nohup): every command a test
        # starts would inherit SIGINT ignored, and the tests that Ctrl-C one would wait in vain
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _warming.append(
        subprocess.Popen(
            [sys.executable, "-m", "tests.warm_kernels"],
            cwd=Path(__file__).resolve().parent.parent,
            env=CLEAN_ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    execute.warm_up()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The kernels' process is done long before a whole run ends; a short run stops it."""
    for proc in _warming:
        if proc.poll() is None:
            proc.kill()
        if proc.wait() > 0:  # a step raised (killed: negative)
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(
                    "tests/warm_kernels.py failed (python -m tests.warm_kernels says why): "
                    "its kernels were compiled by the tests instead"
                )
    _warming.clear()

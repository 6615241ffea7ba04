"""What every attack measurement shares: a target node process, its vitals, and a legitimate
client that keeps asking the node for service while the attack runs.

An attack script (``bench/attacks/<area>.py``) starts a target with :func:`start_target`, once
from this checkout and once from an older one (``--before DIR``: that tree's ``qiz`` is imported
through ``PYTHONPATH``), runs its attack for a fixed time beside :func:`legit_probe`, and reports
with :func:`measure`. The figures say what a user of the attacked node would see: how many of
the legitimate pings were served, and what the attack cost the node in memory and CPU.

These are measurements, not tests: nothing here asserts, and a busy machine is reported
(``load`` in every row) so that nobody publishes figures taken while something else ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qiz.identity import NodeIdentity, PeerRecord
from qiz.procs import NodeProcess
from qiz.qmp.transport import dial

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
LOAD_BUSY = 0.5  # one-minute load per core above which a run is marked busy


@dataclass
class Vitals:
    """Resident memory and CPU time of a process and its children (the worker pool)."""

    rss_mib: float
    cpu_s: float
    fds: int


def vitals(pid: int) -> Vitals:
    """Read ``pid``'s RSS, CPU seconds (its own plus its live children's) and open descriptors
    from /proc."""
    rss = cpu = 0.0
    for proc in [pid, *_children(pid)]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / TICKS
            rss += int(Path(f"/proc/{proc}/statm").read_text().split()[1]) * PAGE
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = -1
    return Vitals(rss / 2**20, cpu, fds)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            for child in map(int, text.split()):
                found += [child, *_children(child)]
    return found


def settle(pid: int, quiet_cpu_s: float = 0.05, step: float = 0.5, limit: float = 60.0) -> None:
    """Wait until the node (with its worker pool, which starts after the ready line) uses less
    than ``quiet_cpu_s`` of CPU per ``step``: figures then show the attack, not the start-up."""
    deadline = time.monotonic() + limit
    last = vitals(pid).cpu_s
    while time.monotonic() < deadline:
        time.sleep(step)
        now = vitals(pid).cpu_s
        if now - last < quiet_cpu_s:
            return
        last = now


@contextlib.contextmanager
def start_target(
    code: Path | None = None, args: tuple[str, ...] = (), workdir: Path | None = None
) -> Iterator[NodeProcess]:
    """A ``qiz node start`` process on 127.0.0.1:0 in a fresh home, running this checkout's
    code or, with ``code``, the ``qiz`` package of another checkout; killed on the way out."""
    with tempfile.TemporaryDirectory(prefix="qiz-attack-", dir=workdir) as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QIZ_")}
        if code is not None:
            env["PYTHONPATH"] = str(Path(code).resolve())
        subprocess.run(  # our own interpreter and module
            [sys.executable, "-m", "qiz", "--home", "target", "init"],
            cwd=tmp,
            env=env,
            check=True,
            capture_output=True,
        )
        node = NodeProcess("target", cwd=Path(tmp), env=env, args=args)
        try:
            node.wait_ready(60)
            settle(node.proc.pid)
            yield node
        finally:
            node.kill()


def child_in_tree(
    code: Path, source: str, stdin: str, timeout: float, args: tuple[str, ...] = ()
) -> dict[str, Any] | str:
    """Run the Python ``source`` in a fresh interpreter that imports ``qiz`` from the checkout
    ``code`` (this one or an older one), feeding it ``stdin``: the JSON object its last output
    line holds, or a sentence saying why there is none (cut off after ``timeout``, or exited).
    A fresh process for each run, so one tree's imports, caches and peak memory never leak
    into another's figures."""
    try:
        done = subprocess.run(  # our own interpreter
            [sys.executable, "-c", source, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(code)},
            cwd=code,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"still running after {timeout:g} s (cut off)"
    if done.returncode != 0:
        return f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class ProbeResult:
    """Legitimate clients' view: each probe dials with a fresh identity and pings once."""

    served: int
    failed: int
    p50_ms: float | None
    p99_ms: float | None


async def legit_probe(
    address: str, stop: asyncio.Event, interval: float = 0.25, timeout: float = 5.0
) -> ProbeResult:
    """Until ``stop`` is set: every ``interval`` seconds a new client dials ``address`` (the
    full handshake a newcomer pays), pings once over the link and closes. A probe that does
    not finish within ``timeout`` counts as failed."""
    served: list[float] = []
    failed = 0

    async def one() -> float:
        identity = NodeIdentity.generate()
        now = time.time()
        record = PeerRecord.create(identity, [], seq=int(now * 1000), now=now)
        start = time.perf_counter()
        link = await dial(address, identity, record, timeout=timeout)
        try:
            await link.ping(timeout=timeout)
        finally:
            link.close()
        return time.perf_counter() - start

    while not stop.is_set():
        try:
            served.append(await asyncio.wait_for(one(), timeout))
        except Exception:  # any failure is what the legitimate user sees
            failed += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    ms = sorted(s * 1000 for s in served)
    return ProbeResult(
        len(ms),
        failed,
        statistics.median(ms) if ms else None,
        ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else None,
    )


async def _probe_process(address: str, seconds: float) -> asyncio.subprocess.Process:
    """:func:`legit_probe` in a process of its own: in the attacker's event loop its latency
    would measure the attacker's load, not the node's."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.attacks.probe",
        address,
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent.parent,
    )


async def _probe_for(address: str, seconds: float) -> ProbeResult:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    return await legit_probe(address, stop)


async def measure(
    name: str,
    node: NodeProcess,
    attack: Callable[[asyncio.Event], Awaitable[dict[str, Any]]],
    seconds: float,
    *,
    code: str = "after",
) -> dict[str, Any]:
    """Run ``attack(stop)`` and :func:`legit_probe` (in its own process) side by side for
    ``seconds``, sampling the node's vitals every 0.2 s; print and return one JSON row.
    ``attack`` returns its own figures (what it sent, what the node answered) and must return
    soon after ``stop``."""
    assert node.ready is not None
    pid = node.proc.pid
    stop = asyncio.Event()
    before = vitals(pid)
    peak = before.rss_mib
    peak_fds = before.fds
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    probe = await _probe_process(node.ready["address"], seconds)
    attacking = asyncio.ensure_future(attack(stop))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not attacking.done():
        await asyncio.sleep(0.2)
        now = vitals(pid)
        peak, peak_fds = max(peak, now.rss_mib), max(peak_fds, now.fds)
    stop.set()
    attack_figures = await attacking
    out, _ = await probe.communicate()
    legit = ProbeResult(**json.loads(out.decode().strip().splitlines()[-1]))
    after = vitals(pid)
    row = {
        "attack": name,
        "code": code,
        "seconds": seconds,
        "node_alive": node.alive(),
        "legit": asdict(legit),
        "rss_mib_start": round(before.rss_mib, 1),
        "rss_mib_peak": round(peak, 1),
        "node_cpu_s": round(after.cpu_s - before.cpu_s, 2),
        "fds_peak": peak_fds,
        "log_bytes": node.log_path.stat().st_size if node.log_path.exists() else 0,
        "load_per_core": round(load, 2),
        "busy": load > LOAD_BUSY,
        **attack_figures,
    }
    print(json.dumps(row, sort_keys=True), flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Before/after rows as a markdown table of the figures every attack shares."""
    head = (
        "| attack | code | legit served/failed | p50 ms | RSS peak MiB | node CPU s | fds "
        "| log bytes |"
    )
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        legit = r["legit"]
        p50 = "-" if legit["p50_ms"] is None else f"{legit['p50_ms']:.1f}"
        lines.append(
            f"| {r['attack']} | {r['code']} | {legit['served']}/{legit['failed']} | {p50} "
            f"| {r['rss_mib_peak']} | {r['node_cpu_s']} | {r['fds_peak']} | {r['log_bytes']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # the probe process of :func:`measure`: ADDRESS SECONDS
    print(json.dumps(asdict(asyncio.run(_probe_for(sys.argv[1], float(sys.argv[2]))))))

"""Deploy engine benchmark: how long a published version takes to run on its followers, and
what verifying a channel's TUF chain costs.

    python bench/deploy.py [--quick] [--busy-ok]

Measured in one run, on this machine:

* on a loopback mesh of ``MESH`` ``qiz node start`` processes (no workers; the pool's default
  k=3 of n=5 needs five holders besides the publisher), node 0 publishes a bundle of
  ``BUNDLE_MIB`` MiB (1 MiB with ``--quick``) of fresh random bytes plus a small program, and
  ``FOLLOWERS`` other nodes follow its channel:

  - **first install**: from the publish call to each follower running the version; the
    followers' ``deploy follow`` calls start right after the publish returns (the follow
    installs once before it answers);
  - **upgrade**: a version 2 of the same size is published; from the publish call to each
    follower running it. Followers learn of a version by refreshing their channel every
    ``REFRESH`` s (no push), so this includes up to one refresh period;
  - **rollback**: a version 3 whose program exits at once is published; from the publish
    call to each follower running version 2 again with 3 marked bad (its restart policy:
    ``MAX_STARTS`` starts, ``BACKOFF`` s apart);
  - the publish call alone (describe, put into the pool, sign, put the channel tree, publish
    the name record);

* **TUF chain verification** in this process: a follower with an empty trusted state (the
  channel's first root given) verifying root, timestamp, snapshot, targets and the newest
  version's descriptor; and a follower with everything trusted already refreshing once more.

A busy machine makes these figures noise: a full run is refused when the 1-minute load average
is over ``MAX_LOAD`` (``--busy-ok`` runs anyway and says so).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Figure, emit_with_loads, machine, markdown_table, median, time_op
from bench.store import MIB, Mesh, check_quiet, log

MESH = 6
FOLLOWERS = 3
BUNDLE_MIB = 10
QUICK_BUNDLE_MIB = 1
REFRESH = 0.5  # seconds: the followers' [deploy] refresh_every in this benchmark
BACKOFF = 0.2
MAX_STARTS = 2
WAIT = 180.0  # seconds a step may take before the run gives up
POLL = 0.02

APP = """import sys, time
print("bench bundle {version} up", flush=True)
{body}
"""
HEALTHY_BODY = "time.sleep(3600)"
CRASH_BODY = "sys.exit(3)"


def write_bundle(directory: Path, version: str, size: int, crash: bool = False) -> None:
    """A bundle directory: the manifest, a program that stays up (or exits at once), and
    ``size`` fresh random bytes (so the pool stores every version anew)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "qiz-bundle.toml").write_text(
        f'name = "bench"\nversion = "{version}"\ncommand = ["python3", "app.py"]\n'
        f"[restart]\nbackoff = {BACKOFF}\nbackoff_max = {BACKOFF}\n"
        f"max_starts = {MAX_STARTS}\nwindow = 60.0\n",
        encoding="utf-8",
    )
    body = CRASH_BODY if crash else HEALTHY_BODY
    (directory / "app.py").write_text(APP.format(version=version, body=body), encoding="utf-8")
    with open(directory / "data.bin", "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))


def running(status: dict[str, Any], version: str) -> bool:
    return status.get("current") == version and status.get("state") in ("running", "healthy")


def wait_all(
    mesh: Mesh, followers: list[Any], check: Callable[[dict[str, Any]], bool], started: float
) -> list[float]:
    """Seconds from ``started`` until ``check`` holds for each follower's bundle status."""
    done: dict[int, float] = {}
    deadline = time.monotonic() + WAIT
    while len(done) < len(followers):
        if time.monotonic() > deadline:
            raise SystemExit(f"deploy bench: followers not there after {WAIT:.0f} s")
        for i, node in enumerate(followers):
            if i in done:
                continue
            reply = node.request("deploy_status", 10.0, name="bench")
            if reply.get("ok") and check(reply["result"]):
                done[i] = time.perf_counter() - started
        time.sleep(POLL)
    return [done[i] for i in range(len(followers))]


def mesh_figures(root: Path, quick: bool) -> list[Figure]:
    size = (QUICK_BUNDLE_MIB if quick else BUNDLE_MIB) * MIB
    label = f"{size // MIB} MiB bundle, {FOLLOWERS} followers"
    log(f"starting {MESH} node processes ...")
    mesh = Mesh(root / "mesh", size=MESH, config=f"\n[deploy]\nrefresh_every = {REFRESH}\n")
    figures: list[Figure] = []
    extra = {"followers": FOLLOWERS, "bundle_mib": size / MIB, "refresh_every_s": REFRESH}

    def add(name: str, seconds: list[float]) -> None:
        figures.append(
            Figure(
                "deploy over the mesh",
                f"{name} ({label})",
                median(seconds),
                "s",
                extra={**extra, "max_s": max(seconds), "each_s": [round(x, 3) for x in seconds]},
            )
        )

    try:
        publisher, followers = mesh.nodes[0], mesh.nodes[1 : 1 + FOLLOWERS]
        # 1. first install: publish, then every follower follows at once
        write_bundle(root / "v1", "1", size)
        started = time.perf_counter()
        published = mesh.call(publisher, "deploy_publish", path=str(root / "v1"))
        publish_s = [time.perf_counter() - started]
        channel = published["channel"]
        errors: list[str] = []

        def follow(node: Any) -> None:
            reply = node.request("deploy_follow", WAIT, channel=channel)
            if not reply.get("ok"):
                errors.append(f"{node.name}: {reply.get('error')}")

        threads = [threading.Thread(target=follow, args=(n,)) for n in followers]
        for thread in threads:
            thread.start()
        first = wait_all(mesh, followers, lambda s: running(s, "1"), started)
        for thread in threads:
            thread.join()
        if errors:
            raise SystemExit(f"deploy bench: follow failed: {errors[0]}")
        add("publish to running, first install", first)

        # 2. upgrade to version 2
        write_bundle(root / "v2", "2", size)
        started = time.perf_counter()
        mesh.call(publisher, "deploy_publish", path=str(root / "v2"))
        publish_s.append(time.perf_counter() - started)
        add(
            "publish to running, upgrade 1 -> 2",
            wait_all(mesh, followers, lambda s: running(s, "2"), started),
        )

        # 3. a version 3 that crashes at start: every follower goes back to 2 by itself
        write_bundle(root / "v3", "3", size, crash=True)
        started = time.perf_counter()
        mesh.call(publisher, "deploy_publish", path=str(root / "v3"))
        publish_s.append(time.perf_counter() - started)
        add(
            "publish of a crashing 3 to running 2 again (rollback)",
            wait_all(
                mesh, followers, lambda s: running(s, "2") and "3" in s.get("bad", []), started
            ),
        )
        add("publish alone (describe, put, sign, tree, name record)", publish_s)
    finally:
        mesh.close()
    return figures


def tuf_figures(root: Path, quick: bool) -> list[Figure]:
    """A real channel (one composite key per role, as a node's own channel) with one version;
    a follower's verification of the chain from nothing, and a refresh with nothing new."""
    import hashlib

    from qiz.crypto.composite import CompositeSigningKey
    from qiz.crypto.ids import ContentId
    from qiz.deploy.channel import Channel, RoleKeys
    from qiz.deploy.descriptor import Descriptor, FileEntry
    from qiz.deploy.signing import CompositeSigner
    from qiz.deploy.updater import ChannelFollower, DirectorySource

    signer = CompositeSigner(CompositeSigningKey.generate())
    roles = {
        r: RoleKeys((signer.public_key,), 1) for r in ("root", "targets", "snapshot", "timestamp")
    }
    channel = Channel.create(root / "channel", roles, [signer])
    app = b"print('hello')\n"
    manifest = 'name = "app"\nversion = "1"\ncommand = ["python3", "app.py"]\n'
    files = tuple(
        sorted(
            [
                FileEntry("app.py", len(app), hashlib.sha256(app).digest()),
                FileEntry(
                    "qiz-bundle.toml", len(manifest), hashlib.sha256(manifest.encode()).digest()
                ),
            ],
            key=lambda f: f.path,
        )
    )
    descriptor = Descriptor("app", "1", manifest, str(ContentId.of(app)), files)
    channel.publish("1", descriptor.to_bytes(), [signer])
    first_root = (root / "channel" / "metadata" / "1.root.json").read_bytes()
    source = DirectorySource(root / "channel")
    runs = iter(range(10**9))

    def cold() -> None:
        state = root / f"cold-{next(runs)}"
        ChannelFollower(state, source, trusted_root=first_root).latest()

    warm_follower = ChannelFollower(root / "warm", source, trusted_root=first_root)
    warm_follower.latest()
    rounds = 5 if quick else 30
    cold_s = time_op(cold, min_runs=rounds, min_seconds=0.0)
    warm_s = time_op(warm_follower.latest, min_runs=rounds, min_seconds=0.0)
    group = "TUF chain, one composite ML-DSA-65 + Ed25519 key per role"
    return [
        Figure(
            group,
            "verify from nothing (root, timestamp, snapshot, targets, descriptor)",
            median(cold_s) * 1e3,
            "ms",
            extra={"runs": len(cold_s)},
        ),
        Figure(
            group,
            "refresh with nothing new (a new timestamp checked, the rest trusted)",
            median(warm_s) * 1e3,
            "ms",
            extra={"runs": len(warm_s)},
        ),
    ]


def run(quick: bool = False, busy_ok: bool = False) -> list[Figure]:
    from qiz.allocator import tune_allocator

    tune_allocator()
    load = check_quiet(quick, busy_ok)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="qiz-bench-deploy-") as tmp:
        figures += tuf_figures(Path(tmp), quick)
        figures += mesh_figures(Path(tmp), quick)
    return emit_with_loads(figures, load, quick=quick)


def main() -> None:
    figures = run("--quick" in sys.argv, "--busy-ok" in sys.argv)
    print()
    print(f"## Deploy engine ({machine()})\n")
    print(markdown_table(figures))


if __name__ == "__main__":
    main()

"""The main part of ``qiz demo``: node processes on loopback doing replicated quantum work.

Five homes are made in a temporary directory and five ``qiz node start`` processes run on
127.0.0.1, four of them given only the first one's address. Then, through the first node:

* every other node is resolved by id through the DHT, and a name published by one node is
  resolved by another;
* a replicated QAOA sweep (an 8 x 8 grid of angles, 2 replicas per shard) and a VQE job are
  submitted, signed by the first node's identity;
* as soon as a worker holds part of the work, its process is killed (SIGKILL);
* the jobs finish anyway: lost replicas are placed again; each job's attestation is fetched and
  verified offline, and the results are checked against exact references;
* the sweep's result and attestation are stored in the storage pool from the first node
  (erasure-coded k-of-n over the surviving nodes) and fetched back by another node, compared
  bit for bit with the coordinator's copy and verified again;
* the first node publishes a small signed bundle on its deploy channel (TUF metadata over the
  pool, a name record in the DHT); two other nodes follow the channel, verify the chain,
  install the bundle atomically and run it supervised; its output is read back from each;
* link latency, handshake time and AEAD speed are measured beside the whitepaper's claims.

Every node is stopped at the end, and the demo checks that no process it started (nodes or
their worker processes) is left: each carries a marker in its environment. The nodes bind
port 0 and report their address in their ready line (:mod:`qiz.procs`); they run in one process
group of their own (a Ctrl-C at the terminal reaches the demo, which stops them in order) and
die with the demo if it is killed (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qiz import QizError
from qiz.compute import spec as specs
from qiz.compute.attest import verify_file
from qiz.control import control_request
from qiz.home import Home
from qiz.procs import NodeProcess, NodeStartError, kill_group, processes_with_env

MARKER = "QIZ_DEMO_RUN"
CLAIM_LATENCY_MS = 5.0  # whitepaper: "5 ms average latency"
CLAIM_HANDSHAKE_MS = 1.0  # whitepaper: "key exchange 1 ms"
CLAIM_ENCRYPTION_GBS = 1.0  # whitepaper: "encryption speed 1 GB/s"
SWEEP_GRAPH = "random:16,3"
# the quantum-kernel job: a fidelity-kernel matrix of 96 samples in row blocks of 32 (qiz.ml)
KERNEL_MAP = {"name": "zz", "qubits": 4, "reps": 2, "entanglement": "linear", "bandwidth": 0.5}
KERNEL_SAMPLES = 96
KERNEL_SHARD = 32
KERNEL_SEED = 11
FREEZE_SETTLE_S = 0.5  # seconds for a frozen worker's last messages to arrive
KILL_ATTEMPTS = 3  # times the jobs go out again when they were done before the freeze
# the sweep's result goes to the pool after the kill: 4 nodes are left, so the owner has 3
# others to hold its columns; any 2 of them rebuild it
STORE_K, STORE_N = 2, 3
BUNDLE = "hello-mesh"
BUNDLE_APP = """import os, time
print(f"hello from {os.environ['QIZ_BUNDLE_NAME']} {os.environ['QIZ_BUNDLE_VERSION']}", flush=True)
time.sleep(3600)
"""


class DemoError(QizError, RuntimeError):
    """The demo saw something wrong; the message says what."""


class MeshNode(NodeProcess):
    """A demo node process: its control-socket replies unwrapped, failures as DemoError."""

    def request(self, command: str, timeout: float = 30.0, **arguments: Any) -> Any:
        try:
            reply = asyncio.run(control_request(self.home, command, timeout, **arguments))
        except ValueError:
            raise DemoError(f"{self.name}: {command}: the node closed the control socket") from None
        if not reply.get("ok"):
            raise DemoError(f"{self.name}: {command} failed: {reply.get('error')}")
        return reply.get("result", reply.get("status"))


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ConnectionError, OSError, DemoError, TimeoutError):
            value = check()
            if value:
                return value
        time.sleep(0.1)
    raise DemoError(f"timed out waiting for {what}")


def run_mesh_demo(
    size: int = 5, *, keep: bool = False, show: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run the five-process demo and return its report; raise DemoError if anything is off.

    The first node's dashboard URL is printed on stderr as soon as the mesh is up. With
    ``keep`` the nodes stay up after the report until Ctrl-C or SIGTERM, so the dashboard can
    be watched and used (submit more jobs from it); then everything is stopped as usual.
    ``show`` is called with the report before that wait (so it is printed while the mesh
    runs)."""
    import tempfile

    run_id = uuid.uuid4().hex
    env = {**os.environ, MARKER: run_id}
    env.pop("QIZ_HOME", None)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qiz-mesh-") as tmp, _interruptible():
        nodes: list[MeshNode] = []
        try:
            report = _run(Path(tmp), size, env, nodes)
            if show is not None:
                show(report)
            if keep:
                _keep_running(nodes, report)
        except (DemoError, NodeStartError) as exc:
            logs = "".join(f"\n--- {n.name} (last lines of its log){n.tail()}" for n in nodes)
            raise DemoError(f"{exc}{logs}") from None
        finally:
            _stop_all(nodes)
        leftovers = _processes_with(run_id)
        if leftovers:
            if nodes:
                kill_group(nodes[0].group)
            for pid in leftovers:  # one that left the group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise DemoError(f"processes were left running: {leftovers}")
    report["left_running"] = 0
    report["duration_s"] = round(time.perf_counter() - began, 1)
    return report


def _make_homes(tmp: Path, names: list[str]) -> dict[str, str]:
    """A home per node (name -> node id). A bundle and its channel's tree are put by their
    publisher with the node's own k of n: after the kill 4 nodes are left, so the same 2 of 3
    as the sweep's result."""
    ids = {}
    for name in names:
        ids[name] = str(Home(tmp / name).init().node_id)
        with (tmp / name / "config.toml").open("a", encoding="utf-8") as config:
            config.write(f"\n[store]\nk = {STORE_K}\nn = {STORE_N}\n")
    return ids


def _run(tmp: Path, size: int, env: dict, nodes: list[MeshNode]) -> dict[str, Any]:
    names = [f"node{i}" for i in range(size)]
    ids = _make_homes(tmp, names)
    started = time.perf_counter()
    # The first node leads a new process group that every other node joins: the mesh is
    # one group, apart from the terminal's (Ctrl-C reaches the demo, which stops the nodes).
    first = MeshNode(tmp / names[0], args=["--slots", "1"], env=env, name=names[0])
    nodes.append(first)
    first.wait_ready(60)  # it bound 127.0.0.1:0 and says which port it got
    for name in names[1:]:  # everyone else knows only the first node's address
        nodes.append(
            MeshNode(
                tmp / name,
                peers=[first.bootstrap],
                args=["--slots", "1"],
                env=env,
                name=name,
                group=first.group,
            )
        )
    for node in nodes:
        node.wait_ready(60)
    addresses = {node.name: node.address for node in nodes}

    def everyone_joined() -> bool:  # all bootstrapped from the first: it knows every node
        contacts = [n.request("status", 5.0)["dht"]["contacts"] for n in nodes]
        return contacts[0] >= size - 1 and min(contacts) >= 1

    _wait(everyone_joined, 60, "the nodes to find each other")
    mesh_seconds = time.perf_counter() - started
    dashboard = _dashboard_url(first)
    if dashboard:
        print(f"dashboard of node0 (open it to watch): {dashboard}", file=sys.stderr, flush=True)
    for node in nodes:  # each worker's capacity is in the DHT before the jobs
        _wait(
            lambda node=node: node.request("status", 5.0)["compute"]["worker"] is not None,
            30,
            "workers",
        )

    resolved = []
    for name in names[1:]:
        answer = first.request("resolve", id=ids[name])
        if answer["node_id"] != ids[name]:
            raise DemoError("resolution returned the wrong node")
        resolved.append(
            {
                "node": name,
                "node_id": ids[name],
                "addresses": answer["addresses"],
                "resolve_ms": answer["resolve_ms"],
            }
        )
    nodes[1].request(
        "name_publish", label="quantum-lab", value=f"qaoa sweeps at {nodes[1].address}", ttl=600
    )
    named = _wait(
        lambda: nodes[-1].request("name_resolve", name=f"{ids[names[1]]}/quantum-lab"),
        20,
        "the name to resolve",
    )

    identity = Home(first.home).load_identity()
    sweep_doc = {
        "kind": "sweep",
        "params": {
            "over": "qaoa",
            "base": {"graph": SWEEP_GRAPH, "p": 1, "gammas": [0.0], "betas": [0.0]},
            "axes": {
                "gammas.0": [round(0.1 + 0.1 * i, 3) for i in range(8)],
                "betas.0": [round(0.05 + 0.05 * i, 3) for i in range(8)],
            },
            "shard": 4,
        },
        "replicas": 2,
        "seed": 7,
    }
    vqe_doc = {
        "kind": "vqe",
        "params": {"hamiltonian": "tfim:8:ring", "ansatz": "hva:4", "maxiter": 300},
        "replicas": 2,
        "seed": 7,
    }
    submitted = time.perf_counter()
    jobs, victim = _jobs_and_a_kill(
        first, nodes, identity, ids, sweep_doc=sweep_doc, vqe_doc=vqe_doc
    )
    # then a quantum-kernel matrix, its row blocks across the workers (qiz.ml on the mesh)
    jobs["quantum-kernel"] = _submit(first, identity, _kernel_doc())
    finals = {
        label: _wait(
            lambda job=job: (s := first.request("job_status", job=job))["state"] != "running" and s,
            90,
            f"job {label}",
        )
        for label, job in jobs.items()
    }
    jobs_seconds = time.perf_counter() - submitted
    results = {}
    attestations = {}
    for label, state in finals.items():
        if state["state"] != "done":
            raise DemoError(f"job {label} ended {state['state']}: {state['reason']}")
        data = base64.b64decode(first.request("job_result", job=jobs[label])["attestation"])
        (tmp / f"{label}.attestation").write_bytes(data)
        attestations[label] = data
        verified = verify_file(data)  # offline: signatures, quorum, digests
        results[label] = _summarise(label, state, verified, ids)
    if not any(
        r["state"] == "lost" and r["worker"] == victim["node_id"]
        for state in finals.values()
        for r in state["replicas"]
    ):
        raise DemoError("the killed worker's replicas were never reported lost")
    fetcher = next(n for n in nodes[1:] if n.alive())
    stored = _store_and_fetch(
        first, fetcher, jobs["qaoa-sweep"], attestations["qaoa-sweep"], ids=ids, victim=victim
    )
    deployed = _deploy(
        tmp, first, [*[n for n in nodes[1:] if n.alive() and n is not fetcher][:1], fetcher]
    )
    relayed = _through_a_relay(tmp, env, first, nodes)
    return {
        "dashboard": dashboard,
        "nodes": [{"name": n, "node_id": ids[n], "address": addresses[n]} for n in names],
        "mesh_s": round(mesh_seconds, 2),
        "resolved": resolved,
        "name": {
            "name": f"{ids[names[1]][:16]}.../quantum-lab",
            "value": named["value"],
            "resolved_by": names[-1],
        },
        "killed": victim,
        "jobs": results,
        "jobs_s": round(jobs_seconds, 2),
        "stored": stored,
        "deployed": deployed,
        "relayed": relayed,
        "network": _network_figures(first, next(n for n in nodes[1:] if n.alive())),
    }


def _dashboard_url(node: MeshNode) -> str | None:
    from qiz.web.token import TOKEN_FILE

    api = node.request("status")["api_url"]
    if not api:
        return None
    token = (node.home / TOKEN_FILE).read_text(encoding="ascii").strip()
    return f"{api}?token={token}"


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM both raise KeyboardInterrupt while the demo runs, so either ends it
    through its cleanup (every node stopped), whatever disposition they were inherited with:
    a shell's background job starts with SIGINT ignored, and must still stop on it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _keep_running(nodes: list[MeshNode], report: dict[str, Any]) -> None:
    """Wait for Ctrl-C (or SIGTERM) with the surviving nodes up; the caller stops them."""
    print(
        f"\nthe mesh keeps running (--keep): {report['dashboard']}\n"
        "press Ctrl-C to stop every node",
        file=sys.stderr,
        flush=True,
    )
    try:
        while any(n.alive() for n in nodes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping the mesh", file=sys.stderr, flush=True)


def _submit(first: MeshNode, identity: Any, document: dict[str, Any]) -> str:
    """Sign ``document`` as the first node's owner and submit it there; the job id."""
    raw = specs.sign(specs.make_body(document, identity), identity)
    return first.request("job_submit", spec=base64.b64encode(raw).decode("ascii"))["job_id"]


def _jobs_and_a_kill(
    first: MeshNode,
    nodes: list[MeshNode],
    identity: Any,
    ids: dict,
    *,
    sweep_doc: dict[str, Any],
    vqe_doc: dict[str, Any],
) -> tuple[dict[str, str], dict]:
    """Submit the sweep and the VQE and kill a worker holding part of them. The VQE goes
    first: the sweep's tasks are short, so it goes out last, right before the freeze. On a
    fast, quiet machine both may be done before the freeze lands: then the same jobs go out
    again (another deadline, so another job id) and the freeze is tried again."""
    for attempt in range(KILL_ATTEMPTS):
        deadline = {"deadline": 3600 + attempt}
        vqe_id = _submit(first, identity, {**vqe_doc, **deadline})
        jobs = {"qaoa-sweep": _submit(first, identity, {**sweep_doc, **deadline}), "vqe": vqe_id}
        last = attempt == KILL_ATTEMPTS - 1
        victim = _freeze_and_kill(first, nodes, jobs, ids, wait=30.0 if last else 6.0)
        if victim is not None:
            return jobs, victim
    raise DemoError("every job was done before a worker holding part of it could be killed")


def _freeze_and_kill(
    first: MeshNode, nodes: list[MeshNode], jobs: dict[str, str], ids: dict, *, wait: float
) -> dict | None:
    """SIGKILL a worker (not the submitter) that holds an unfinished replica of ``jobs``,
    preferably of the sweep.

    The sweep's replicas are short: a worker seen holding one may have finished it before a
    kill lands (seen in CI), and the whole sweep may even be done by then on a fast run. So
    every other worker is frozen (SIGSTOP) as soon as the jobs are out: a frozen node can
    report nothing, so the replicas the coordinator counts unfinished on it stay so. The one
    holding the most of the sweep (then of the VQE, whose one task runs for seconds) is
    killed; the others resume. Returns its name and id, or None (everyone resumed) when no
    frozen worker held an unfinished replica within ``wait`` seconds (the jobs were done).
    """
    workers = [n for n in nodes if n is not first and n.alive()]
    by_id = {ids[n.name]: n for n in workers}
    for node in workers:
        node.proc.send_signal(signal.SIGSTOP)
    # What a worker wrote to its socket before it froze still arrives (the kernel sends it): a
    # replica seen running a moment ago may be done. Let those last results land first, so that
    # the replicas counted unfinished below stay so (a CI run killed a worker whose results
    # were already on their way, and nothing was lost).
    time.sleep(FREEZE_SETTLE_S)

    def holders() -> dict[MeshNode, tuple[int, int]]:
        """Unfinished replicas per frozen worker: (of the sweep, of the VQE)."""
        held: dict[MeshNode, tuple[int, int]] = {}
        for index, label in enumerate(("qaoa-sweep", "vqe")):
            for r in first.request("job_status", job=jobs[label])["replicas"]:
                node = by_id.get(r["worker"])
                if r["state"] in ("queued", "running") and node is not None:
                    counts = list(held.get(node, (0, 0)))
                    counts[index] += 1
                    held[node] = (counts[0], counts[1])
        return held

    victim: MeshNode | None = None
    try:
        try:
            held = _wait(holders, wait, "a worker to take part of the jobs")
        except DemoError:
            return None
        victim = max(held, key=held.__getitem__)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
    finally:
        for node in workers:
            if node is not victim and node.alive():
                node.proc.send_signal(signal.SIGCONT)
    return {"name": victim.name, "node_id": ids[victim.name]}


def _store_and_fetch(
    first: MeshNode, fetcher: MeshNode, job: str, data: bytes, *, ids: dict, victim: dict
) -> dict[str, Any]:
    """Store the sweep's result in the pool from ``first``; fetch it back through ``fetcher``
    (another node, which asks the holders and checks every chunk against the content id);
    compare the attestation bit for bit with the coordinator's copy and verify it again."""
    names = {v: k for k, v in ids.items()}
    began = time.perf_counter()
    put = first.request("job_store", 60.0, job=job, k=STORE_K, n=STORE_N)
    stored_s = time.perf_counter() - began
    if victim["node_id"] in put["holders"]:
        raise DemoError("the pool placed a column on the killed node")
    began = time.perf_counter()
    fetched = fetcher.request("job_fetch_result", 60.0, cid=put["cid"])
    fetched_s = time.perf_counter() - began
    back = base64.b64decode(fetched["attestation"])
    if back != data:
        raise DemoError(
            f"{fetcher.name} fetched {put['cid']} but its attestation differs from "
            f"the coordinator's ({len(back)} bytes, not {len(data)})"
        )
    verify_file(back)
    return {
        "cid": put["cid"],
        "files": put["files"],
        "content_bytes": put["size"],
        "attestation_bytes": len(data),
        "k": put["k"],
        "n": put["n"],
        "holders": [names.get(h, h[:12]) for h in put["holders"]],
        "stored_by": first.name,
        "fetched_by": fetcher.name,
        "identical": True,
        "verified": True,
        "store_s": round(stored_s, 3),
        "fetch_s": round(fetched_s, 3),
    }


def _deploy(tmp: Path, first: MeshNode, followers: list[MeshNode]) -> dict[str, Any]:
    """Publish a small bundle from ``first``; each follower follows the channel (name record,
    TUF chain over the pool, atomic install) and runs it; its first output line is read back
    from the follower's log."""
    bundle = tmp / BUNDLE
    bundle.mkdir()
    (bundle / "qiz-bundle.toml").write_text(
        f'name = "{BUNDLE}"\nversion = "1.0.0"\ncommand = ["python3", "app.py"]\n',
        encoding="utf-8",
    )
    (bundle / "app.py").write_text(BUNDLE_APP, encoding="utf-8")
    began = time.perf_counter()
    published = first.request("deploy_publish", 60.0, path=str(bundle))
    running = []
    for node in followers:
        node.request("deploy_follow", 60.0, channel=published["channel"])

        def said_hello(node: MeshNode = node) -> dict | None:
            status = node.request("deploy_status", name=BUNDLE)
            log = node.request("deploy_logs", name=BUNDLE)["text"]
            line = next((x for x in log.splitlines() if x.startswith("hello from")), None)
            up = status["state"] in ("running", "healthy") and line is not None
            return {**status, "said": line} if up else None

        status = _wait(said_hello, 30, f"{BUNDLE} to run on {node.name}")
        running.append(
            {
                "node": node.name,
                "version": status["current"],
                "state": status["state"],
                "pid": status["pid"],
                "said": status["said"],
            }
        )
    return {
        "channel": published["channel"],
        "version": published["version"],
        "files": published["files"],
        "published_by": first.name,
        "running": running,
        "publish_to_running_s": round(time.perf_counter() - began, 2),
    }


def _through_a_relay(
    tmp: Path, env: dict, first: MeshNode, nodes: list[MeshNode]
) -> dict[str, Any]:
    """One more node that nobody may dial (its config says it is private, as a node behind NAT
    finds out from its peers; real NATs are in tests/test_netns_nat.py): it reserves on
    relays and publishes them instead of an address. A newcomer that knows only its id (and
    is not linked to it: no routing table holds a node without an address) reaches it through
    a relay, the QMP handshake end to end inside the circuit, then punches a direct path and
    leaves the relay."""

    def start(name: str, config: str) -> tuple[MeshNode, str]:
        home = tmp / name
        node_id = str(Home(home).init().node_id)
        with (home / "config.toml").open("a", encoding="utf-8") as file:
            file.write(config)
        node = MeshNode(
            home,
            peers=[first.bootstrap],
            args=["--no-worker"],
            env=env,
            name=name,
            group=first.group,
        )
        nodes.append(node)
        node.wait_ready(60)
        return node, node_id

    hidden, node_id = start("node5", '\n[nat]\nreachability = "private"\n')
    relays = _wait(
        lambda: hidden.request("status", 5.0)["nat"]["relays"], 30, "node5 to reserve on relays"
    )
    dialler, _ = start("node6", "")
    started = time.perf_counter()
    # node5's record with its relays may still be on its way into the DHT: try until it is
    answer = _wait(lambda: dialler.request("connect", 10.0, target=node_id), 20, "a link to node5")

    def path() -> str | None:
        rows = dialler.request("peers", 5.0)["peers"]
        return next(
            (r["path"] for r in rows if r["node_id"] == node_id and r["state"] == "online"), None
        )

    _wait(lambda: path() == "direct", 20, "the punch to a direct link")
    return {
        "node": hidden.name,
        "node_id": node_id,
        "relays": relays,
        "dialler": dialler.name,
        "reached_at": answer["address"],
        "link_ms": answer["handshake_ms"],
        "direct_after_s": round(time.perf_counter() - started, 2),
    }


def _kernel_data() -> Any:
    """The kernel job's data: a fixed set of samples (seeded), as the check recomputes it."""
    import numpy as np

    return np.random.default_rng(KERNEL_SEED).normal(size=(KERNEL_SAMPLES, 4))


def _kernel_doc() -> dict[str, Any]:
    return {
        "kind": "kernel",
        "params": {"map": KERNEL_MAP, "x": _kernel_data().tolist(), "shard": KERNEL_SHARD},
        "replicas": 2,
        "seed": 0,
    }


def _summarise(label: str, state: dict, verified: Any, ids: dict) -> dict[str, Any]:
    names = {v: k for k, v in ids.items()}
    ran = Counter(
        names.get(r["worker"], r["worker"][:12]) for r in state["replicas"] if r["state"] == "done"
    )
    lost = Counter(
        names.get(r["worker"], r["worker"][:12]) for r in state["replicas"] if r["state"] == "lost"
    )
    out: dict[str, Any] = {
        "job_id": state["job_id"],
        "tasks": state["tasks"],
        "verified": True,
        "signed_by_workers": sorted(names.get(str(w), str(w)[:12]) for w in verified.workers),
        "replicas_done": dict(sorted(ran.items())),
        "replicas_lost": dict(sorted(lost.items())),
    }
    if label == "qaoa-sweep":
        from qiz.quantum.algorithms.qaoa import QaoaSimulator
        from qiz.quantum.problems.graphs import load_graph
        from qiz.quantum.problems.qubo import QuboProblem

        points = [p for task in verified.results for p in task]
        best = max(points, key=lambda p: p["expectation"])
        g = load_graph(SWEEP_GRAPH, 0)
        sim = QaoaSimulator(QuboProblem.maxcut(g.num_nodes, g.edges, g.weights))
        optimum = float(sim.cost.max())
        check = sim.expectation([best["point"]["gammas.0"]], [best["point"]["betas.0"]])
        if abs(check - best["expectation"]) > 1e-9 * max(1.0, abs(check)):
            raise DemoError("a sweep point differs from a local evaluation")
        out.update(
            points=len(points),
            best_point=best["point"],
            best_expected_cut=best["expectation"],
            exact_max_cut=optimum,
            ratio=round(best["expectation"] / optimum, 4),
        )
    elif label == "quantum-kernel":
        import numpy as np

        from qiz.ml.fidelity import feature_map, gram, states

        matrix = np.array([row for block in verified.results for row in block["rows"]])
        x = _kernel_data()
        fmap = feature_map(
            KERNEL_MAP["name"], KERNEL_MAP["qubits"], x.shape[1], KERNEL_MAP["reps"],
            entanglement=KERNEL_MAP["entanglement"], bandwidth=KERNEL_MAP["bandwidth"],
        )  # fmt: skip
        local = gram(states(fmap, x))
        deviation = float(np.max(np.abs(matrix - local)))
        if deviation > 1e-10:
            raise DemoError(f"the mesh's kernel matrix differs from a local one by {deviation}")
        out.update(
            samples=int(matrix.shape[0]),
            qubits=KERNEL_MAP["qubits"],
            max_deviation=deviation,
            min_value=float(matrix.min()),
        )
    else:
        from qiz.quantum.core.pauli import PauliSum

        energy = verified.results[0]["energy"]
        exact = PauliSum.tfim(8, periodic=True).ground_energy()
        if abs(energy - exact) > 1e-5:
            raise DemoError(f"VQE reached {energy}, not the ground energy {exact}")
        out.update(energy=energy, exact=exact, energy_error=abs(energy - exact))
    return out


def _network_figures(first: MeshNode, other: MeshNode) -> dict[str, Any]:
    """Link RTTs seen by the first node; handshakes and AEAD speed measured here."""
    from qiz.crypto.measure import aead_speed
    from qiz.identity import NodeIdentity, PeerRecord
    from qiz.qmp.transport import dial

    status = first.request("status")
    rtts = [link["rtt_ms"] for link in status["links"] if link["rtt_ms"] is not None]

    async def handshakes_and_pings(count: int = 10) -> tuple[list[float], list[float]]:
        me = NodeIdentity.generate()
        record = PeerRecord.create(me, [], seq=1, now=time.time())
        times, pings = [], []
        for _ in range(count):
            began = time.perf_counter()
            link = await dial(other.address, me, record)
            times.append((time.perf_counter() - began) * 1000)
            for _ in range(10):
                pings.append(await link.ping(timeout=5.0) * 1000)
            link.close()
            await link.wait_closed()
        return times, pings

    times, pings = asyncio.run(handshakes_and_pings())
    speed = aead_speed(64)
    return {
        "link_rtt_ms_median": round(statistics.median(pings), 3),
        "link_rtt_ms_p95": round(sorted(pings)[int(0.95 * (len(pings) - 1))], 3),
        "busy_link_rtt_ms_median": round(statistics.median(rtts), 3) if rtts else None,
        "handshake_ms_median": round(statistics.median(times), 3),
        "aes_gcm_gb_s": round(speed, 2),
        "claims": {
            "latency_ms": CLAIM_LATENCY_MS,
            "key_exchange_ms": CLAIM_HANDSHAKE_MS,
            "encryption_gb_s": CLAIM_ENCRYPTION_GBS,
        },
    }


def _stop_all(nodes: list[MeshNode]) -> None:
    """Ask every node to stop (each stops its worker processes); SIGKILL one that does not."""
    for node in nodes:
        if node.alive():
            with contextlib.suppress(Exception):
                node.request("stop", 5.0)
    for node in nodes:
        try:
            node.wait(15)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(5)
        node.close()


def _processes_with(marker: str) -> list[int]:
    """Live processes whose environment carries this run's marker (the worker processes too),
    after up to 5 s for those already on their way out."""
    deadline = time.monotonic() + 5.0
    while True:
        found = processes_with_env(MARKER, marker)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def render_mesh(mesh: dict[str, Any], console: Any) -> None:
    """The human report of :func:`run_mesh_demo`."""
    from rich.markup import escape
    from rich.table import Table

    console.rule("the main job: a five-process QIZ mesh doing replicated quantum work")
    if mesh.get("dashboard"):
        console.print(f"dashboard of node0: {mesh['dashboard']}", markup=False, soft_wrap=True)
    for node in mesh["nodes"]:
        console.print(f"  {node['name']}  {node['node_id']}  {node['address']}", markup=False)
    console.print(
        f"{len(mesh['nodes'])} processes found each other from one bootstrap address in "
        f"{mesh['mesh_s']:.1f} s"
    )
    ms = [r["resolve_ms"] for r in mesh["resolved"]]
    console.print(
        f"resolved {len(ms)} nodes by id through the DHT (signed peer records), "
        f"{min(ms):.1f} to {max(ms):.1f} ms; name {mesh['name']['name']} -> "
        f"{mesh['name']['value']!r} (resolved by {mesh['name']['resolved_by']})",
        markup=False,
    )
    killed = mesh["killed"]
    console.print(
        f"[bold red]killed[/bold red] {killed['name']} (SIGKILL) while it held part of the jobs; "
        f"its replicas were placed again"
    )
    table = Table(
        title=f"jobs (all finished in {mesh['jobs_s']:.1f} s, attestations verified offline)"
    )
    for column in ("job", "tasks", "ran where (replicas done)", "lost", "result", "exact"):
        table.add_column(column)
    for label, job in mesh["jobs"].items():
        ran = ", ".join(f"{k} {v}" for k, v in job["replicas_done"].items())
        lost = ", ".join(f"{k} {v}" for k, v in job["replicas_lost"].items()) or "-"
        if label == "qaoa-sweep":
            result = (
                f"{job['points']} points; best <C> = {job['best_expected_cut']:.4f} at "
                f"gamma {job['best_point']['gammas.0']}, beta {job['best_point']['betas.0']}"
            )
            exact = f"max cut {job['exact_max_cut']:g} (ratio {job['ratio']:.3f}, p = 1)"
        elif label == "quantum-kernel":
            result = f"{job['samples']} x {job['samples']} fidelity kernel, {job['qubits']} qubits"
            exact = f"local matrix (max deviation {job['max_deviation']:.1e})"
        else:
            result = f"E = {job['energy']:.9f}"
            exact = f"{job['exact']:.9f} (error {job['energy_error']:.1e})"
        table.add_row(f"{label} {job['job_id'][:10]}", str(job["tasks"]), ran, lost, result, exact)
    console.print(table)
    for label, job in mesh["jobs"].items():
        console.print(
            f"  [green]verified[/green] {label}: spec signature, job id, "
            f"{len(job['signed_by_workers'])} workers' signed claims, quorum per task, "
            "result digests"
        )
    stored = mesh["stored"]
    console.print(
        f"[green]stored[/green] the sweep's result in the pool from {stored['stored_by']} as "
        f"{stored['cid']} ({stored['content_bytes']:,} bytes, k={stored['k']} of "
        f"n={stored['n']} on {', '.join(stored['holders'])}) in {stored['store_s']:.2f} s; "
        f"{stored['fetched_by']} fetched it back in {stored['fetch_s']:.2f} s: the attestation "
        "is identical bit for bit and verifies",
    )
    deployed = mesh["deployed"]
    owner, _, name = deployed["channel"].partition("/")
    said = "; ".join(
        f"{r['node']} verified the TUF chain, installed it and runs it (pid {r['pid']}): "
        f"{r['said']!r}"
        for r in deployed["running"]
    )
    console.print(
        f"[green]deployed[/green] bundle {BUNDLE} {deployed['version']}, published by "
        f"{deployed['published_by']} on channel {escape(owner[:16])}.../{escape(name)}; "
        f"{escape(said)} ({deployed['publish_to_running_s']:.1f} s from publish)"
    )
    relayed = mesh["relayed"]
    console.print(
        f"[green]relayed[/green] {relayed['node']}, which nobody may dial, published "
        f"{len(relayed['relays'])} relays and no address; {relayed['dialler']} reached it by "
        f"id through {escape(relayed['reached_at'])} in {relayed['link_ms']:.1f} ms (QMP end "
        f"to end in the circuit), then punched a direct path ({relayed['direct_after_s']:.1f} s)"
    )
    net = mesh["network"]
    claims = net["claims"]
    figures = Table(title="measured on this machine, beside the whitepaper's claims")
    for column in ("figure", "measured", "whitepaper"):
        figures.add_column(column)
    figures.add_row(
        "link latency (QMP ping RTT, median / p95)",
        f"{net['link_rtt_ms_median']:.2f} / {net['link_rtt_ms_p95']:.2f} ms",
        f"{claims['latency_ms']:g} ms average",
    )
    busy = net["busy_link_rtt_ms_median"]
    if busy is not None:
        figures.add_row("link latency while the jobs ran (keepalive RTT)", f"{busy:.2f} ms", "")
    figures.add_row(
        "QMP handshake, new peer (X-Wing KEM + ML-DSA-65/Ed25519 auth, TCP)",
        f"{net['handshake_ms_median']:.2f} ms",
        f"{claims['key_exchange_ms']:g} ms key exchange",
    )
    figures.add_row(
        "AES-256-GCM, 1 MiB records",
        f"{net['aes_gcm_gb_s']:.2f} GB/s",
        f"{claims['encryption_gb_s']:g} GB/s",
    )
    console.print(figures)

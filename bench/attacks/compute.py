"""Attacks on the compute layer (issue 13 items 1 and 3), before and after, against a node process.

* ``offer-flood``: ``--coordinators`` throwaway coordinators each dial the target, offer one tiny
  sampler task and vanish; the figures are the rows left waiting in the worker's ``work`` table,
  the provider records it published for them (its ``announced`` counter after the fix; before,
  the jobs.sqlite rows, one record per job) and the node's RSS.
* ``heavy-spec``: one peer offers ``--heavy`` legitimate but costly specs (a 10,000-instruction
  circuit each) while another peer offers a tiny one; the figures are the target's own peak RSS
  growth (the node process, not its children) and where the tiny offer's answer came among the
  heavy ones.

Run: ``.venv/bin/python -m bench.attacks.compute [--before /tmp/qiz-before]``. Prints one JSON
row per attack and code, then a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.attacks.probe import measure, start_target, table
from qiz.compute import spec as specs
from qiz.identity import NodeIdentity, PeerRecord
from qiz.qmp.rpc import RpcEndpoint, RpcError
from qiz.qmp.transport import dial

TINY = "OPENQASM 3.0; qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; c = measure q;"


def _spec(identity: NodeIdentity, qasm: str, shots: int = 16) -> bytes:
    document = {"kind": "sampler", "params": {"qasm": qasm, "shots": shots}, "replicas": 1}
    document["seed"] = 7
    return specs.sign(specs.make_body(document, identity), identity)


async def _client(address: str, identity: NodeIdentity) -> tuple[Any, RpcEndpoint]:
    now = time.time()
    record = PeerRecord.create(identity, [], seq=int(now * 1000), now=now)
    link = await dial(address, identity, record, timeout=10)
    return link, RpcEndpoint(link, {})


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _work_rows(home: Path) -> dict[str, int]:
    try:
        db = sqlite3.connect(f"file:{home / 'jobs.sqlite'}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        waiting = db.execute("SELECT COUNT(*) FROM work WHERE delivered = 0").fetchone()[0]
        total = db.execute("SELECT COUNT(*) FROM work").fetchone()[0]
        size = db.execute(
            "SELECT coalesce(sum(length(spec) + coalesce(length(result), 0)), 0) FROM work "
            "WHERE delivered = 0"
        ).fetchone()[0]
    finally:
        db.close()
    providers = None
    with contextlib.suppress(sqlite3.Error):  # the node's own store: the records it published
        records = sqlite3.connect(f"file:{home / 'records.sqlite'}?mode=ro", uri=True)
        try:
            providers = records.execute(
                "SELECT COUNT(*) FROM records WHERE kind = 'provider'"
            ).fetchone()[0]
        finally:
            records.close()
    return {
        "work_rows": total,
        "waiting_rows": waiting,
        "waiting_bytes": size,
        "provider_records": providers,
    }


def offer_flood(address: str, coordinators: int) -> Any:
    async def attack(stop: asyncio.Event) -> dict[str, Any]:
        accepted = refused = 0
        for _ in range(coordinators):
            if stop.is_set():
                break
            identity = NodeIdentity.generate()
            try:
                link, rpc = await _client(address, identity)
            except Exception:
                refused += 1
                continue
            try:
                body = {"spec": _spec(identity, TINY), "task": 0, "seed": 7}
                await rpc.call("job.offer", body, timeout=60)
                accepted += 1
            except (RpcError, TimeoutError):
                refused += 1
            finally:
                link.close()
        await stop.wait()
        return {"offers_accepted": accepted, "offers_refused": refused}

    return attack


def heavy_specs(address: str, heavy: int, lines: int, pid: int) -> Any:
    async def attack(stop: asyncio.Event) -> dict[str, Any]:
        attacker, victim = NodeIdentity.generate(), NodeIdentity.generate()
        link_a, rpc_a = await _client(address, attacker)
        link_b, rpc_b = await _client(address, victim)
        order: list[str] = []
        hwm = _hwm_kib(pid)

        async def offer(rpc: RpcEndpoint, raw: bytes, name: str) -> str:
            try:
                await rpc.call("job.offer", {"spec": raw, "task": 0, "seed": 7}, timeout=300)
                outcome = "accepted"
            except RpcError as exc:
                outcome = exc.code
            except TimeoutError:
                outcome = "timeout"
            order.append(name)
            return outcome

        try:
            qasm = "OPENQASM 3.0; qubit[4] q;\n" + "h q[0];\n" * lines
            tasks = []
            for i in range(heavy):
                raw = _spec(attacker, qasm, shots=10 + i)
                tasks.append(asyncio.ensure_future(offer(rpc_a, raw, f"A{i}")))
                await asyncio.sleep(0)
            await asyncio.sleep(0.5)
            tasks.append(asyncio.ensure_future(offer(rpc_b, _spec(victim, TINY), "B")))
            outcomes = await asyncio.gather(*tasks)
        finally:
            link_a.close()
            link_b.close()
        await stop.wait()
        return {
            "heavy_outcomes": outcomes[:-1],
            "victim_outcome": outcomes[-1],
            "victim_answered_at": order.index("B") + 1,
            "answers": len(order),
            "node_hwm_growth_mib": round((_hwm_kib(pid) - hwm) / 1024, 1),
        }

    return attack


async def _status(node: Any) -> dict[str, Any]:
    from qiz.control import control_request

    with contextlib.suppress(Exception):
        reply = await control_request(node.cwd / node.home, "status", 10)
        return reply["result"].get("compute") or {}
    return {}


async def run_one(name: str, code: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    label = "before" if code is not None else "after"
    with start_target(code, ("--slots", "1")) as node:
        address = node.ready["address"]  # type: ignore[index]
        if name == "offer-flood":
            attack = offer_flood(address, args.coordinators)
            seconds = args.seconds
        else:
            attack = heavy_specs(address, args.heavy, args.lines, node.proc.pid)
            seconds = args.heavy_seconds
        row = await measure(name, node, attack, seconds, code=label)
        compute = await _status(node)
        counters = compute.get("worker_counters") or {}
        row.update(_work_rows(node.cwd / node.home))
        row["announced"] = counters.get("announced", "n/a")
        row["evicted"] = counters.get("evicted", 0)
        print(json.dumps(row, sort_keys=True, default=str), flush=True)
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="an older checkout to measure as well")
    parser.add_argument("--coordinators", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--heavy", type=int, default=4)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--heavy-seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=("offer-flood", "heavy-spec"))
    args = parser.parse_args()
    rows = []
    for name in ("offer-flood", "heavy-spec"):
        if args.only and name != args.only:
            continue
        for code in ([args.before] if args.before else []) + [None]:
            rows.append(asyncio.run(run_one(name, code, args)))
    print(table(rows))
    print()
    print(
        "| attack | code | work rows | waiting rows | waiting bytes | provider records stored "
        "| announced | evicted |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['attack']} | {r['code']} | {r.get('work_rows')} | {r.get('waiting_rows')} "
            f"| {r.get('waiting_bytes')} | {r.get('provider_records')} | {r['announced']} "
            f"| {r['evicted']} |"
        )


if __name__ == "__main__":
    main()

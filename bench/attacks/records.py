"""Record-store floods of the DHT (issue 13, item 4), before and after, against a real node.

The report's attack: one QMP link stores validly signed name records with ``dht/1.store`` as
fast as it can (380 records/s, 165 MB per 20k records, the store full for everyone within
minutes). Each run goes against a fresh node from this checkout and one from an older checkout
(``--before DIR``, default /tmp/qiz-before), beside the legitimate probe of
:mod:`bench.attacks.probe`, for the same time:

* ``store flood, one link``: one link (its id solves the node's 8-bit puzzle), records of a
  pool of pre-minted puzzle-solving signers, round robin, several calls in flight;
* ``store flood, rotating links``: the same, but the attacker opens a link with a new (again
  puzzle-solving) id every time it is refused for its rate, to get past the per-peer limit.

For each: records accepted per second, what the refusals said, the store's rows and bytes
(``records.sqlite`` with its WAL, and the raw record bytes in it), the node's peak RSS and CPU,
and the legitimate pings served.

    .venv/bin/python -m bench.attacks.records [--seconds 20] [--before /tmp/qiz-before]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.attacks.probe import measure, start_target, table
from qiz.crypto.ids import ServiceName
from qiz.identity import NodeIdentity, PeerRecord
from qiz.identity.puzzle import generate_identity
from qiz.procs import NodeProcess
from qiz.qmp.rpc import RpcEndpoint, RpcError
from qiz.qmp.transport import dial
from qiz.resolve.records import make_name_record

PUZZLE_BITS = 8  # what `qiz init` gives a node (home.DEFAULT_PUZZLE_BITS)
SIGNERS = 64  # pre-minted signers the attacker rotates through
LINK_IDS = 64  # pre-minted ids for the rotating-links attack
IN_FLIGHT = 8  # store calls the attacker keeps in flight on its link


def mint(count: int) -> list[NodeIdentity]:
    return [generate_identity(PUZZLE_BITS) for _ in range(count)]


def store_size(node: NodeProcess) -> dict[str, int]:
    home = node.cwd / node.home
    files = sum(
        p.stat().st_size for p in home.glob("records.sqlite*") if p.is_file()
    )  # the database, its WAL and shared-memory index
    db = sqlite3.connect(f"file:{home / 'records.sqlite'}?mode=ro", uri=True)
    try:
        rows, raw = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(raw)), 0) FROM records"
        ).fetchone()
    finally:
        db.close()
    return {"store_rows": rows, "store_raw_bytes": raw, "store_file_bytes": files}


def flood(
    node: NodeProcess,
    signers: list[NodeIdentity],
    link_ids: list[NodeIdentity],
    honest_ids: list[NodeIdentity],
    rotate: bool,
):
    """The attack coroutine for :func:`measure`: store until ``stop``, return the figures."""

    async def attack(stop: asyncio.Event) -> dict[str, Any]:
        answers: collections.Counter[str] = collections.Counter()
        sample: dict[str, str] = {}
        ids = list(link_ids)
        counter = iter(range(10**9))
        started = time.monotonic()

        async def open_link() -> tuple[Any, RpcEndpoint]:
            identity = ids.pop()
            now = time.time()
            record = PeerRecord.create(identity, [], seq=int(now * 1000), now=now)
            link = await dial(node.address, identity, record, timeout=5)
            return link, RpcEndpoint(link, {})

        async def honest_store(label: str) -> tuple[str, Any]:
            """An honest signer over its own link: store a record, then ask for it back."""
            owner = honest.pop()
            now = time.time()
            own = PeerRecord.create(owner, [], seq=int(now * 1000), now=now)
            link = await dial(node.address, owner, own, timeout=5)
            rpc = RpcEndpoint(link, {})
            answer = "error"
            try:
                raw = make_name_record(owner, label, "honest", seq=1, now=now, ttl=3600)
                try:
                    await rpc.call("dht/1.store", {"kind": "name", "raw": raw}, timeout=10)
                    answer = "stored"
                except RpcError as exc:
                    answer = exc.code
                return answer, (rpc, ServiceName.of(owner.node_id, label).digest, raw)
            finally:
                if answer != "stored":
                    link.close()

        async def still_held(where: Any) -> bool:
            rpc, key, raw = where
            try:
                reply = await rpc.call("dht/1.find_value", {"key": key, "kind": "name"}, timeout=10)
                return raw in reply["records"]
            finally:
                rpc.link.close()

        honest = list(honest_ids)
        _, early = await honest_store("before-flood")
        link, rpc = await open_link()
        links_opened = 1

        async def one() -> str:
            i = next(counter)
            signer = signers[i % len(signers)]
            raw = make_name_record(signer, f"f{i}", "x" * 64, seq=1, now=time.time(), ttl=3600)
            try:
                await rpc.call("dht/1.store", {"kind": "name", "raw": raw}, timeout=10)
                return "stored"
            except RpcError as exc:
                sample.setdefault(exc.code, exc.message)
                return exc.code
            except Exception as exc:  # the link went: counted, and the attacker redials
                return type(exc).__name__

        while not stop.is_set():
            batch = await asyncio.gather(*(one() for _ in range(IN_FLIGHT)))
            answers.update(batch)
            if (rotate and "rate-limited" in batch) or not link.is_open:
                link.close()
                if not ids:
                    break  # out of pre-minted ids: the attacker's budget is spent
                link, rpc = await open_link()
                links_opened += 1
        link.close()
        elapsed = time.monotonic() - started
        late_answer, late = await honest_store("after-flood")
        early_held = await still_held(early)
        late_held = late_answer == "stored" and await still_held(late)
        return {
            "stores_sent": sum(answers.values()),
            "accepted": answers["stored"],
            "accepted_per_s": round(answers["stored"] / elapsed, 1),
            "answers": dict(answers),
            "refusal_said": sample,
            "links_opened": links_opened,
            "honest_before_flood_still_held": early_held,
            "honest_after_flood": late_answer,
            "honest_after_flood_held": late_held,
            **store_size(node),
        }

    return attack


async def main(seconds: float, before: Path | None) -> list[dict[str, Any]]:
    print(f"minting {SIGNERS + LINK_IDS} puzzle-solving ids ({PUZZLE_BITS} bits)...", flush=True)
    signers, link_ids, honest = mint(SIGNERS), mint(LINK_IDS), mint(2)
    rows = []
    codes = [("before", before), ("after", None)] if before is not None else [("after", None)]
    for name, rotate in (("store flood, one link", False), ("store flood, rotating links", True)):
        for label, code in codes:
            with start_target(code) as node:
                rows.append(
                    await measure(
                        name,
                        node,
                        flood(node, signers, link_ids, honest, rotate),
                        seconds,
                        code=label,
                    )
                )
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        table(rows),
        "",
        "| attack | code | accepted/s | accepted | links | store rows | raw MB | file MB "
        "| honest record kept / stored after |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        lines.append(
            f"| {r['attack']} | {r['code']} | {r['accepted_per_s']} | {r['accepted']} "
            f"| {r['links_opened']} | {r['store_rows']} | {r['store_raw_bytes'] / 1e6:.1f} "
            f"| {r['store_file_bytes'] / 1e6:.1f} | {r['honest_before_flood_still_held']} / "
            f"{r['honest_after_flood']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--before", type=Path, default=Path("/tmp/qiz-before"))
    parser.add_argument("--no-before", action="store_true", help="measure this checkout only")
    args = parser.parse_args()
    print(report(asyncio.run(main(args.seconds, None if args.no_before else args.before))))

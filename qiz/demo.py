"""``make demo``: what QIZ can do today, end to end, on this machine, with measured timings.

Two nodes get homes in a temporary directory. Bob publishes a signed peer record; Alice checks
it (the id is the hash of the keys, both signature halves hold, it has not expired), signs a
message and seals it to Bob's X-Wing key; Bob opens it and checks Alice's signature. Then the
demo shows that a flipped bit, a forged record and a wrong recipient are all refused. Then five
nodes start on loopback with one bootstrap address, link up over QMP (ML-KEM-768 + X25519 key
exchange, ML-DSA-65 + Ed25519 identities, AES-256-GCM frames), find each other's signed records
through the DHT, publish and resolve a name, and call each other over RPC. The demo grows as
the mesh gains compute and storage.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from qiz.crypto.errors import DecryptionFailed
from qiz.demo_quantum import render_quantum, run_quantum_demo
from qiz.home import Home
from qiz.identity import NodeIdentity
from qiz.identity.peer_record import PeerRecord, PeerRecordError
from qiz.identity.sealed_message import SealedMessageError, open_message, seal_message
from qiz.node import Node

T = TypeVar("T")
MESSAGE = b"Alice -> Bob: run QAOA p=3 on graph random:20,3, seed 7, and sign the result."


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - start) * 1000.0


def run_demo(as_json: bool = False) -> dict[str, Any]:
    """Run the demo; print a report (rich or JSON) and return it."""
    with tempfile.TemporaryDirectory(prefix="qiz-demo-") as tmp:
        alice_home, bob_home = Home(Path(tmp) / "alice"), Home(Path(tmp) / "bob")
        alice, t_alice = _timed(alice_home.init)
        bob, t_bob = _timed(bob_home.init)
        alice = alice_home.load_identity()
        bob = bob_home.load_identity()
        now = time.time()
        bob_record, t_record = _timed(
            lambda: PeerRecord.create(bob, ["127.0.0.1:7451"], seq=1, now=now)
        )
        pinned, t_check = _timed(
            lambda: PeerRecord.verify(bob_record.raw, now=time.time(), expected_id=bob.node_id)
        )
        sealed, t_seal = _timed(lambda: seal_message(alice, pinned, MESSAGE))
        opened, t_open = _timed(lambda: open_message(bob, sealed))
        if opened.message != MESSAGE or opened.sender != alice.node_id:
            raise RuntimeError("demo: the opened message differs from what was sealed")

        refusals: dict[str, str] = {}
        tampered = bytearray(sealed)
        tampered[len(tampered) // 2] ^= 0x01
        try:
            open_message(bob, bytes(tampered))
        except (DecryptionFailed, SealedMessageError) as exc:
            refusals["flipped bit in sealed message"] = str(exc)
        forged = bytearray(bob_record.raw)
        forged[-10] ^= 0x01
        try:
            PeerRecord.verify(bytes(forged), now=time.time())
        except PeerRecordError as exc:
            refusals["forged peer record"] = str(exc)
        try:
            open_message(alice, sealed)
        except (DecryptionFailed, SealedMessageError) as exc:
            refusals["opened by the wrong node"] = str(exc)
        if len(refusals) != 3:
            raise RuntimeError("demo: a tampered input was accepted")

    report = {
        "alice": str(alice.node_id),
        "bob": str(bob.node_id),
        "verified": [
            "Bob's peer record: id = SHA3-256(keys), ML-DSA-65 and Ed25519 halves, not expired",
            "Alice's composite signature inside the sealed message, bound to Bob's id",
            "HPKE (ML-KEM-768 + X25519) ciphertext authenticated with AES-256-GCM",
        ],
        "refused": refusals,
        "message_bytes": len(MESSAGE),
        "sealed_bytes": len(sealed),
        "timings_ms": {
            "create home + identity (Alice)": round(t_alice, 3),
            "create home + identity (Bob)": round(t_bob, 3),
            "sign peer record": round(t_record, 3),
            "verify peer record": round(t_check, 3),
            "sign + seal message": round(t_seal, 3),
            "open + verify message": round(t_open, 3),
        },
    }
    report["mesh"] = asyncio.run(_mesh_demo())
    report["quantum"] = run_quantum_demo()
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        _render(report)
    return report


async def _mesh_demo(size: int = 5) -> dict[str, Any]:
    """Start ``size`` nodes on loopback; all but the first bootstrap from the first."""
    first = Node(NodeIdentity.generate())
    await first.start()
    nodes = [first]
    try:
        for _ in range(size - 1):
            node = Node(NodeIdentity.generate(), peers=[first.address])
            await node.start()
            nodes.append(node)
        await asyncio.gather(*(asyncio.wait_for(n.joined.wait(), 30) for n in nodes))
        # Post-DNS resolution: every node finds every other's signed record in the DHT.
        resolves = []
        for a in nodes:
            for b in nodes:
                if a is not b:
                    start = time.perf_counter()
                    record = await a.dht.resolve_peer(b.node_id, use_cache=False)
                    resolves.append((time.perf_counter() - start) * 1000)
                    if record.node_id != b.node_id:
                        raise RuntimeError("demo: resolution returned the wrong node")
        published = await nodes[1].publish_name("api", nodes[1].address, 600)
        answer = await nodes[-1].resolve_name(nodes[1].node_id, "api")
        if answer["value"] != nodes[1].address:
            raise RuntimeError("demo: the name resolved to something else")
        handshakes = []
        calls = []
        for a in nodes:
            for b in nodes:
                if a is b:
                    continue
                start = time.perf_counter()
                rpc = await a.connect(b.address, b.node_id)
                handshakes.append((time.perf_counter() - start) * 1000)
                info = await rpc.call("node.info")
                if info["node_id"] != str(b.node_id):
                    raise RuntimeError("demo: a node answered with the wrong id")
                for _ in range(20):
                    start = time.perf_counter()
                    await rpc.call("qmp.ping", b"x" * 32)
                    calls.append((time.perf_counter() - start) * 1000)
        links = {str(n.node_id): len(n.status()["links"]) for n in nodes}
        return {
            "nodes": [{"id": str(n.node_id), "address": n.address} for n in nodes],
            "links_per_node": links,
            "connect_ms_median": round(statistics.median(handshakes), 3),
            "rpc_round_trip_ms_median": round(statistics.median(calls), 3),
            "rpc_calls": len(calls),
            "resolves": len(resolves),
            "resolve_ms_median": round(statistics.median(resolves), 3),
            "name": f"{nodes[1].node_id.short()}.../api",
            "name_stored_at": published["stored_at"],
            "name_value": answer["value"],
        }
    finally:
        for node in nodes:
            await node.stop()


def _render(report: dict[str, Any]) -> None:
    console = Console(highlight=False)
    console.rule("QIZ demo: post-quantum identities, signed and sealed messages")
    console.print(f"Alice  {report['alice']}")
    console.print(f"Bob    {report['bob']}")
    console.print(
        f"\nAlice sent Bob {report['message_bytes']} bytes, sealed to {report['sealed_bytes']}."
    )
    console.print("\n[bold]verified[/bold]")
    for line in report["verified"]:
        console.print(f"  [green]ok[/green]  {line}")
    console.print("\n[bold]refused, as they must be[/bold]")
    for what, why in report["refused"].items():
        console.print(f"  [green]refused[/green]  {what}: {why}")
    table = Table(title="timings on this machine (one run, milliseconds)")
    table.add_column("step")
    table.add_column("ms", justify="right")
    for step, ms in report["timings_ms"].items():
        table.add_row(step, f"{ms:.2f}")
    console.print(table)
    mesh = report["mesh"]
    console.rule("a QIZ mesh on loopback: QMP links and RPC")
    for node in mesh["nodes"]:
        console.print(
            f"node {node['id']} at {node['address']}: {mesh['links_per_node'][node['id']]} links"
        )
    console.print(
        f"{mesh['resolves']} DHT resolutions by id (signed records, S/Kademlia d=4), median "
        f"{mesh['resolve_ms_median']:.1f} ms; name {mesh['name']} -> "
        f"{mesh['name_value']!r} (stored at {mesh['name_stored_at']} nodes)",
        markup=False,
    )
    console.print(
        f"{mesh['rpc_calls']} RPC calls over post-quantum links, median round trip "
        f"{mesh['rpc_round_trip_ms_median']:.3f} ms; connect (or reuse) median "
        f"{mesh['connect_ms_median']:.3f} ms"
    )
    render_quantum(report["quantum"], console)

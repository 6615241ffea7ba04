"""``make demo``: what QIZ can do today, end to end, on this machine, with measured timings.

Two nodes get homes in a temporary directory. Bob publishes a signed peer record; Alice checks
it (the id is the hash of the keys, both signature halves hold, it has not expired), signs a
message and seals it to Bob's X-Wing key; Bob opens it and checks Alice's signature. Then the
demo shows that a flipped bit, a forged record and a wrong recipient are all refused. Then the
quantum processor shows each capability once against an exact reference. Then the main job
(:mod:`qiz.demo_mesh`): five node processes on loopback, one bootstrap address, resolution by id
and by name, a replicated QAOA sweep and a VQE job with a worker killed mid-run, and the
results verified from their attestations; the storage pool, a deployed bundle, and a node
nobody may dial reached through a relay and then a punched direct path. The demo grows as the
mesh gains capabilities.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from qiz.crypto.errors import DecryptionFailed
from qiz.demo_mesh import render_mesh, run_mesh_demo
from qiz.demo_quantum import render_quantum, run_quantum_demo
from qiz.home import Home
from qiz.identity.peer_record import PeerRecord, PeerRecordError
from qiz.identity.sealed_message import SealedMessageError, open_message, seal_message

T = TypeVar("T")
MESSAGE = b"Alice -> Bob: run QAOA p=3 on graph random:20,3, seed 7, and sign the result."


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - start) * 1000.0


def run_demo(
    as_json: bool = False, keep: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Run the demo and return its report; unless ``as_json``, print it for people on
    ``console`` as it goes (the caller prints the JSON, and the closing line)."""
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
    report["quantum"] = run_quantum_demo()

    out = console or Console(highlight=False, soft_wrap=True)

    def show(mesh: dict[str, Any]) -> None:
        report["mesh"] = mesh
        _render(report, out)

    # With --json and --keep the mesh stays up all the same; the one JSON answer comes when the
    # command ends (after Ctrl-C), with the final figures (every node stopped).
    mesh = run_mesh_demo(keep=keep, show=None if as_json else show)
    report["mesh"] = mesh  # with the final figures (nothing left running, total time)
    return report


def _render(report: dict[str, Any], console: Console) -> None:
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
    render_quantum(report["quantum"], console)
    render_mesh(report["mesh"], console)

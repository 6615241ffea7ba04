"""Floods of the link layer (issue 13, items 5 and 6), before and after, against a real node.

Three attacks, each run for the same time against a node from this checkout and one from an
older checkout (``--before DIR``, default /tmp/qiz-before), beside the legitimate probe of
:mod:`bench.attacks.probe` (a newcomer dials from 127.0.0.1 and pings, four times a second):

* ``connection flood``: 1,500 silent TCP connections from five other /24s of 127.0.0.0/8, each
  reopened half a second after the node closes it;
* ``handshake flood``: valid INITs with fresh KEM ciphertexts from one other /24, 32 in flight
  (the INITs are made before the clock starts: the attacker's CPU per INIT is reported apart);
* ``altered-replay flood``: one seen INIT with a different payload byte each time and ``mac1``
  recomputed, which defeats a replay cache keyed on ``mac1``.

For each: legitimate pings served / failed, the node's peak RSS and CPU seconds, and what the
attack got (connections held, full handshakes the node performed per second).

    .venv/bin/python -m bench.attacks.qmp [--seconds 15] [--before /tmp/qiz-before]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.attacks.probe import measure, start_target, table
from qiz.identity import NodeIdentity, PeerRecord
from qiz.qmp.cookie import compute_mac1
from qiz.qmp.frames import MAX_BODY, FrameDecoder, FrameKind, encode_frame
from qiz.qmp.handshake import VERSION, InitiatorHandshake

FLOOD_SOURCES = [f"127.0.{net}.1" for net in range(1, 6)]  # five /24s that are not the probe's
HANDSHAKE_SOURCE = "127.0.9.1"
CONNECTIONS_PER_SOURCE = 300  # 1,500 silent connections wanted in all
RECONNECT_PAUSE = 0.5  # seconds before a connection the node closed is opened again
IN_FLIGHT = 32  # concurrent INITs of the handshake floods
ANSWER_TIMEOUT = 5.0


def host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


async def first_frame(reader: asyncio.StreamReader) -> FrameKind | None:
    decoder = FrameDecoder(MAX_BODY)
    while True:
        data = await reader.read(65536)
        if not data:
            return None
        frames = decoder.feed(data)
        if frames:
            return frames[0].kind


async def node_record(address: str) -> PeerRecord:
    reader, writer = await asyncio.open_connection(*host_port(address))
    writer.write(encode_frame(FrameKind.HELLO, VERSION.to_bytes(2, "big")))
    decoder = FrameDecoder(MAX_BODY)
    frames: list = []
    while not frames:
        frames = decoder.feed(await reader.read(65536))
    writer.close()
    return PeerRecord.verify(bytes(frames[0].body), now=time.time())


# ----------------------------------------------------------------------------- the attacks


async def connection_flood(address: str) -> Callable[[asyncio.Event], Any]:
    """An attack factory: hold silent connections from five networks."""

    async def attack(stop: asyncio.Event) -> dict[str, Any]:
        opened = closed_by_node = failed = 0
        holding: set[asyncio.Task] = set()
        peak = 0

        async def hold(source: str) -> None:
            nonlocal opened, closed_by_node, failed, peak
            while not stop.is_set():
                try:
                    reader, writer = await asyncio.open_connection(
                        *host_port(address), local_addr=(source, 0)
                    )
                except OSError:
                    failed += 1
                    await asyncio.sleep(0.05)
                    continue
                opened += 1
                live = opened - closed_by_node
                peak = max(peak, live)
                try:
                    read = asyncio.ensure_future(reader.read())
                    waiting = asyncio.ensure_future(stop.wait())
                    await asyncio.wait({read, waiting}, return_when=asyncio.FIRST_COMPLETED)
                    waiting.cancel()
                    if read.done():
                        closed_by_node += 1
                    else:
                        read.cancel()
                finally:
                    writer.close()
                # The probe shares this process's event loop: a reconnect storm would starve it
                # and measure the attacker, not the node. Reopen after a pause.
                await asyncio.sleep(RECONNECT_PAUSE)

        for source in FLOOD_SOURCES:
            for _ in range(CONNECTIONS_PER_SOURCE):
                holding.add(asyncio.ensure_future(hold(source)))
        await stop.wait()
        for task in holding:
            task.cancel()
        await asyncio.gather(*holding, return_exceptions=True)
        return {"opened": opened, "closed_by_node": closed_by_node, "connect_failed": failed}

    return attack


def handshake_flood(make_inits: Callable[[PeerRecord], list[bytes]]) -> Callable:
    """An attack factory: fetch the node's record and make the INITs (before the clock starts),
    then send them, cycling through them, ``IN_FLIGHT`` at a time."""

    async def prepare(address: str) -> Callable[[asyncio.Event], Any]:
        inits = make_inits(await node_record(address))
        return lambda stop: send_inits(address, inits, stop)

    return prepare


async def send_inits(address: str, inits: list[bytes], stop: asyncio.Event) -> dict[str, Any]:
    answers: dict[str, int] = {}
    sent = 0
    started = time.monotonic()

    async def worker() -> None:
        nonlocal sent
        while not stop.is_set():
            body = inits[sent % len(inits)]
            sent += 1
            try:
                reader, writer = await asyncio.open_connection(
                    *host_port(address), local_addr=(HANDSHAKE_SOURCE, 0)
                )
            except OSError:
                answers["connect_failed"] = answers.get("connect_failed", 0) + 1
                continue
            try:
                writer.write(encode_frame(FrameKind.INIT, body))
                kind = await asyncio.wait_for(first_frame(reader), ANSWER_TIMEOUT)
                name = kind.name if kind is not None else "closed"
            except (TimeoutError, OSError):
                name = "no answer"
            finally:
                writer.close()
            answers[name] = answers.get(name, 0) + 1

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    elapsed = time.monotonic() - started
    return {
        "inits_sent": sent,
        "distinct_inits": len(inits),
        "answers": answers,
        "node_full_handshakes_per_s": round(answers.get("RESPONSE", 0) / elapsed, 1),
    }


def fresh_inits(count: int) -> Callable[[PeerRecord], list[bytes]]:
    def make(server: PeerRecord) -> list[bytes]:
        identity = NodeIdentity.generate()
        record = PeerRecord.create(identity, [], seq=1, now=time.time())
        return [InitiatorHandshake(identity, record, server).init_message() for _ in range(count)]

    return make


def altered_replays(count: int) -> Callable[[PeerRecord], list[bytes]]:
    def make(server: PeerRecord) -> list[bytes]:
        (init,) = fresh_inits(1)(server)
        message = init[:-32]
        out = []
        for i in range(count):
            changed = bytearray(message)
            changed[-1 - (i % 16)] ^= 1 + i // 16 % 255  # a different payload byte each time
            out.append(bytes(changed) + compute_mac1(server.xwing_key.raw, bytes(changed)))
            out[-1] += bytes(16)
        return out

    return make


def attacker_cost_per_init(rounds: int = 200) -> dict[str, float]:
    """The attacker's CPU per INIT (ms): a fresh one, and an altered replay."""
    target = NodeIdentity.generate()
    server = PeerRecord.create(target, ["127.0.0.1:1"], seq=1, now=time.time())
    t0 = time.process_time()
    fresh_inits(rounds)(server)
    t1 = time.process_time()
    altered_replays(rounds)(server)
    t2 = time.process_time()
    return {
        "attacker_ms_per_fresh_init": round((t1 - t0) / rounds * 1e3, 3),
        "attacker_ms_per_altered_replay": round((t2 - t1) / rounds * 1e3, 3),
    }


# ----------------------------------------------------------------------------- the run


async def run_one(name: str, code: Path | None, seconds: float, prepare: Callable) -> dict:
    label = "before" if code is not None else "after"
    with start_target(code) as node:
        assert node.ready is not None
        attack = await prepare(node.ready["address"])
        return await measure(name, node, attack, seconds, code=label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--before", type=Path, default=Path("/tmp/qiz-before"))
    parser.add_argument("--only", choices=["connection", "handshake", "replay"], default=None)
    parser.add_argument("--pool", type=int, default=4000, help="distinct INITs per flood")
    args = parser.parse_args()
    print(json.dumps(attacker_cost_per_init()), flush=True)
    attacks = {
        "connection": ("connection flood", connection_flood),
        "handshake": ("handshake flood", handshake_flood(fresh_inits(args.pool))),
        "replay": ("altered-replay flood", handshake_flood(altered_replays(args.pool))),
    }
    codes = ([args.before] if args.before.exists() else []) + [None]
    rows = []
    for key, (name, prepare) in attacks.items():
        if args.only in (None, key):
            for code in codes:
                rows.append(asyncio.run(run_one(name, code, args.seconds, prepare)))
    print()
    print(table(rows))
    for row in rows:
        extra = {k: row[k] for k in row if k in EXTRA}
        print(f"{row['attack']} ({row['code']}): {extra}")


EXTRA = {
    "opened",
    "closed_by_node",
    "connect_failed",
    "inits_sent",
    "distinct_inits",
    "answers",
    "node_full_handshakes_per_s",
}


if __name__ == "__main__":
    main()

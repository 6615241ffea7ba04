"""QMP benchmark, side by side on loopback in one run: what one INIT costs an attacker and the
node (the cost asymmetry the KEM budget bounds); handshake latency and crypto CPU per side; RPC
round trip beside a raw asyncio echo (a Protocol echo server, and the streams echo of the
asyncio docs), in alternating blocks; idle link RTT; bulk throughput over one link against raw
asyncio TCP and TLS 1.3 (Python's ``ssl``), the three transports taking turns in each round so
that a burst of load elsewhere hits all of them. Each server runs in its own process, as a real
peer would.

A busy machine makes these figures noise: the run is refused when the 1-minute load average is
over ``MAX_LOAD`` (``--busy-ok`` measures anyway and says so; ``--quick`` never refuses). The
load at the start and end goes into every figure's JSON line.

Every transport carries the same byte stream and the server returns the stream's SHA-256, which
must match before a figure is printed. Figures stand beside the whitepaper's latency row
(5 ms average, 20 ms peak, 10 Gbps).

    python bench/qmp.py [--quick] [--busy-ok] [--rpc-only] [--one-cpu]

``--rpc-only`` measures the RPC section alone (with its floor: the round trip's unavoidable
crypto and CBOR work timed apart, see :func:`rpc_floor`). ``--one-cpu`` pins the client and
the servers to one CPU (see :func:`pin_to_one_cpu`: on an idle 2-CPU machine, where the
scheduler puts each server decides the round trips more than the code does).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    MAX_LOAD,  # noqa: F401 - the refusal threshold, as its docstring says
    Figure,
    check_quiet,
    emit_with_loads,
    machine,
    markdown_table,
    median,
    percentile,
)
from qiz import wire
from qiz.allocator import tune_allocator
from qiz.identity import NodeIdentity, PeerRecord
from qiz.identity.peer_record import VerifiedRecordCache
from qiz.qmp.channel import DATA_OVERHEAD, Channel, ChannelConfig, InnerType
from qiz.qmp.connection import Connection, QmpConfig
from qiz.qmp.cookie import CookieAuthority, compute_mac1
from qiz.qmp.frames import FrameKind, encode_frame
from qiz.qmp.handshake import EPHEMERAL_POOL, InitiatorHandshake
from qiz.qmp.rpc import RpcEndpoint
from qiz.qmp.transport import Link, Listener, dial

CHUNK = 64 * 1024
CLAIM_LATENCY_MS = 5.0
CLAIM_PEAK_MS = 20.0
CLAIM_GBPS = 10.0
IDLE_QUIET, IDLE_SAMPLES = 2.0, 20  # seconds of silence before each idle ping, pings
IDLE_QUIET_QUICK, IDLE_SAMPLES_QUICK = 0.5, 10
ECHO_BODY = 32  # bytes of the RPC body; the raw echo sends the same RPC message size


# ----------------------------------------------------------------------------- servers


async def serve_qmp(secret_path: str) -> None:
    identity = NodeIdentity.from_secret_bytes(Path(secret_path).read_bytes())
    record = PeerRecord.create(identity, ["127.0.0.1:1"], seq=1, now=time.time())

    def echo(ctx, body):  # a plain handler, answered inline as the DHT's FIND_* are
        return body

    async def echo_async(ctx, body):  # a handler that may wait: a task per request
        return body

    def on_link(link: Link):
        if link.conn.peer and link.conn.peer.addresses == ("127.0.0.1:2",):  # bulk client
            return _bulk_sink(link)  # the listener runs it as a task
        RpcEndpoint(link, {"echo": echo, "echo_async": echo_async})
        return None

    # one client dials hundreds of times from 127.0.0.1: lift the per-network KEM budget
    listener = Listener(
        identity,
        lambda: record,
        on_link=on_link,
        max_inbound=10_000,
        kem_rate=1e9,
        kem_burst=1_000_000_000,
    )
    await listener.start("127.0.0.1:0")
    print(listener.address.rsplit(":", 1)[1], flush=True)
    await asyncio.Event().wait()


async def _bulk_sink(link: Link) -> None:
    header = await link.recv()
    total = int.from_bytes(header, "big")
    digest = hashlib.sha256()
    got = 0
    while got < total:
        chunk = await link.recv()
        digest.update(chunk)
        got += len(chunk)
    await link.send(digest.digest())


class _HashingSink(asyncio.Protocol):
    """Raw-stream server: an 8-byte length, then that many bytes, answered with their SHA-256.
    A Protocol, not streams, so the baseline pays no more per byte than QMP's own adapter."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.header = b""
        self.remaining = -1
        self.digest = hashlib.sha256()

    def data_received(self, data: bytes) -> None:
        if self.remaining < 0:
            self.header += data
            if len(self.header) < 8:
                return
            self.remaining = int.from_bytes(self.header[:8], "big")
            data = self.header[8:]
        self.digest.update(data)
        self.remaining -= len(data)
        if self.remaining <= 0:
            self.transport.write(self.digest.digest())  # type: ignore[attr-defined]


class _Echo(asyncio.Protocol):
    """Raw echo server: every byte back as it comes (the floor an RPC round trip stands on)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def _streams_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
    writer.close()


async def serve_echo() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    streams = await asyncio.start_server(_streams_echo, "127.0.0.1", 0)
    ports = (server.sockets[0].getsockname()[1], streams.sockets[0].getsockname()[1])
    print(f"{ports[0]} {ports[1]}", flush=True)
    await asyncio.Event().wait()


async def serve_stream(use_tls: bool, cert_dir: str) -> None:
    context = None
    if use_tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(f"{cert_dir}/cert.pem", f"{cert_dir}/key.pem")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_HashingSink, "127.0.0.1", 0, ssl=context)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def start_server(*args: str) -> tuple[subprocess.Popen, int]:
    proc, ports = start_server_ports(*args)
    return proc, ports[0]


def start_server_ports(*args: str) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", *args], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, [int(p) for p in proc.stdout.readline().split()]


def make_cert(directory: str) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qiz-bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    Path(directory, "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(directory, "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


# ----------------------------------------------------------------------------- clients


def handshake_cpu(rounds: int, *, warm: bool) -> tuple[float, float]:
    """CPU seconds per handshake on each side, sans-IO, in this process (median). ``warm``:
    the responder has seen the initiator's record before (a reconnecting peer)."""
    now = time.time()
    a_id, b_id = NodeIdentity.generate(), NodeIdentity.generate()
    a_rec = PeerRecord.create(a_id, ["127.0.0.1:1"], seq=1, now=now)
    b_rec = PeerRecord.create(b_id, ["127.0.0.1:2"], seq=1, now=now)
    # one peer address makes every handshake: lift the per-network KEM budget (§4.1)
    cookies = CookieAuthority(b_id.xwing_public.raw, now=now, kem_burst=10**9)
    records = VerifiedRecordCache() if warm else None
    init_cpu, resp_cpu = [], []
    for _ in range(rounds):
        t0 = time.process_time()
        a = Connection.initiator(a_id, a_rec, expected=b_rec, now=now)
        a.start(now)
        msg1 = a.data_to_send()
        t1 = time.process_time()
        b = Connection.responder(
            b_id, b_rec, cookies=cookies, peer_address="x", now=now, records=records
        )
        b.receive_data(msg1, now)
        msg2 = b.data_to_send()
        t2 = time.process_time()
        a.receive_data(msg2, now)
        msg3 = a.data_to_send()
        t3 = time.process_time()
        b.receive_data(msg3, now)
        t4 = time.process_time()
        assert a.established and b.established
        init_cpu.append((t1 - t0) + (t3 - t2))
        resp_cpu.append((t2 - t1) + (t4 - t3))
    return median(init_cpu), median(resp_cpu)


def handshake_cost(rounds: int) -> list[Figure]:
    """What one INIT costs its sender and the responder (CPU ms, median, sans-IO): the cost
    asymmetry of docs/qmp.md §4.1. The attacker reuses one identity and record (the responder's
    record cache makes the record check free after the first), so its work per fresh INIT is an
    encapsulation, an AEAD and an HMAC (plus a key generation, unless it reuses its ephemeral
    key); an altered replay (a seen INIT with one payload byte changed and mac1 recomputed) is
    an HMAC."""
    now = time.time()
    attacker, node = NodeIdentity.generate(), NodeIdentity.generate()
    a_rec = PeerRecord.create(attacker, ["127.0.0.1:1"], seq=1, now=now)
    n_rec = PeerRecord.create(node, ["127.0.0.1:2"], seq=1, now=now)

    def cpu(fn, setup=None) -> float:
        samples = []
        for _ in range(rounds):
            if setup is not None:
                setup()
            t0 = time.process_time()
            fn()
            samples.append(time.process_time() - t0)
        return median(samples) * 1e3

    def make_init() -> bytes:
        return InitiatorHandshake(attacker, a_rec, n_rec).init_message()

    seen = make_init()
    message = bytearray(seen[:-32])

    def altered() -> bytes:
        message[-1] ^= 1
        return bytes(message) + compute_mac1(n_rec.xwing_key.raw, bytes(message)) + bytes(16)

    records = VerifiedRecordCache()
    open_budget = CookieAuthority(node.xwing_public.raw, now=now, kem_burst=10**9)
    spent_budget = CookieAuthority(node.xwing_public.raw, now=now, kem_rate=0.0, kem_burst=1)
    spent_budget.allow_kem("198.51.100.1:1", now)  # its one token, gone

    def respond(cookies: CookieAuthority, body: bytes) -> None:
        conn = Connection.responder(
            node, n_rec, cookies=cookies, peer_address="198.51.100.1:1", now=now, records=records
        )
        conn.receive_data(encode_frame(FrameKind.INIT, body), now)
        conn.data_to_send()

    fresh = [make_init() for _ in range(2 * rounds)]
    respond(open_budget, seen)  # the record check is cached from here on; seen is remembered
    processed = cpu(lambda: respond(open_budget, fresh.pop()))
    replayed = cpu(lambda: respond(open_budget, altered()))
    limited = cpu(lambda: respond(spent_budget, fresh.pop()))
    assert open_budget.kem_operations == rounds + 1 and spent_budget.kem_limited == rounds
    group = "QMP handshake cost (per INIT)"
    EPHEMERAL_POOL.clear()
    with_keygen = cpu(make_init)
    # an attacker may reuse one ephemeral key: its key generation then costs nothing per INIT
    # (a key made ahead of time, outside the timing, is the same cost)
    without_keygen = cpu(make_init, setup=EPHEMERAL_POOL.refill)
    return [
        Figure(group, "attacker CPU, fresh INIT (new ephemeral key)", with_keygen, "ms"),
        Figure(group, "attacker CPU, fresh INIT (ephemeral key reused)", without_keygen, "ms"),
        Figure(group, "attacker CPU, altered replay (mac1 recomputed)", cpu(altered), "ms"),
        Figure(group, "node CPU, INIT processed (decaps + 2 encaps)", processed, "ms"),
        Figure(group, "node CPU, altered replay refused (same KEM ciphertext)", replayed, "ms"),
        Figure(group, "node CPU, INIT over its network's KEM budget (COOKIE)", limited, "ms"),
    ]


class _EchoClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.want = 0
        self.got = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= self.want and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def echo_rtts(echo_ports: list[int], message: bytes, rounds: int) -> tuple[list, list]:
    """Round trips of ``message`` through the raw echo servers: an asyncio Protocol on both
    ends, and asyncio streams on both ends (the docs' echo)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(_EchoClient, "127.0.0.1", echo_ports[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_ports[1])
    proto_rtts, stream_rtts = [], []
    for _ in range(rounds):
        proto.waiter, proto.want, proto.got = loop.create_future(), len(message), 0
        t0 = time.perf_counter()
        transport.write(message)  # type: ignore[attr-defined]
        await proto.waiter
        proto_rtts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        writer.write(message)
        await reader.readexactly(len(message))
        stream_rtts.append(time.perf_counter() - t0)
    transport.close()
    writer.close()
    return proto_rtts, stream_rtts


async def rpc_rounds(link: Link, echo_ports: list[int], quick: bool) -> tuple[list, ...]:
    """RPC round trips (plain, then async handler) over ``link``, in blocks alternating with
    the raw echo's, so that a burst of load elsewhere hits both."""
    rpc = RpcEndpoint(link, {})
    body = os.urandom(ECHO_BODY)
    assert await rpc.call("echo", body) == body
    # the raw echo carries as many bytes as one RPC request's DATA frame
    message = os.urandom(len(wire.encode([0, 1, "echo", body])) + 4 + DATA_OVERHEAD)
    assert await rpc.call("echo_async", body) == body
    rtts: list[float] = []
    async_rtts: list[float] = []
    echo_proto: list[float] = []
    echo_streams: list[float] = []
    for _ in range(5 if quick else 10):
        for method, into in (("echo", rtts), ("echo_async", async_rtts)):
            for _ in range(100 if quick else 300):
                t0 = time.perf_counter()
                await rpc.call(method, body)
                into.append(time.perf_counter() - t0)
        proto_block, stream_block = await echo_rtts(echo_ports, message, 100 if quick else 300)
        echo_proto += proto_block
        echo_streams += stream_block
    return rtts, async_rtts, echo_proto, echo_streams


def rpc_floor(rounds: int = 20_000) -> dict[str, float]:
    """Seconds per round trip of the work an RPC round trip cannot skip, each measured alone in
    this process: seal and open of the request's and the reply's DATA frames (AES-256-GCM, the
    channel's header, nonce and replay window), and the canonical CBOR encode and strict decode
    (size bound, plain-data check, canonical re-encoding) of both messages. What is left of a
    round trip above ``raw echo + these`` is the framing, dispatch and asyncio plumbing."""
    channel_a = Channel(bytes(32), bytes(range(32)), now=0.0, config=ChannelConfig())
    channel_b = Channel(bytes(range(32)), bytes(32), now=0.0, config=ChannelConfig())
    body = os.urandom(ECHO_BODY)
    request = wire.encode([0, 1, "echo", body])
    reply = wire.encode([1, 1, body])
    limit = QmpConfig().max_payload  # what a node's RPC decodes with

    def crypto() -> None:
        for _ in range(rounds):
            channel_b.open(channel_a.seal(InnerType.APP, request, 1.0), 1.0)
            channel_a.open(channel_b.seal(InnerType.APP, reply, 1.0), 1.0)

    def cbor() -> None:
        for _ in range(rounds):
            wire.decode(wire.encode([0, 1, "echo", body]), max_size=limit)
            wire.decode(wire.encode([1, 1, body]), max_size=limit)

    aead = AESGCM(bytes(32))
    nonce, aad = bytes(12), bytes(13)

    def raw_aead() -> None:  # the AEAD calls alone, without the channel: for comparison
        for _ in range(rounds):
            aead.decrypt(nonce, aead.encrypt(nonce, b"\0" + request, aad), aad)
            aead.decrypt(nonce, aead.encrypt(nonce, b"\0" + reply, aad), aad)

    def raw_cbor() -> None:  # cbor2 alone, without the strict checks: for comparison
        for _ in range(rounds):
            cbor2.loads(cbor2.dumps([0, 1, "echo", body], canonical=True))
            cbor2.loads(cbor2.dumps([1, 1, body], canonical=True))

    out = {}
    for name, work in (
        ("crypto", crypto),
        ("cbor", cbor),
        ("aead_alone", raw_aead),
        ("cbor2_alone", raw_cbor),
    ):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            work()
            best = min(best, (time.perf_counter() - t0) / rounds)
        out[name] = best
    return out


async def _rpc_only_client(
    port: int, identity: NodeIdentity, server_record: PeerRecord, quick: bool, echo_ports: list
) -> tuple[list, ...]:
    record = PeerRecord.create(identity, ["127.0.0.1:1"], seq=1, now=time.time())
    link = await dial(f"127.0.0.1:{port}", identity, record, expected=server_record)
    try:
        return await rpc_rounds(link, echo_ports, quick)
    finally:
        link.close()


def rpc_figures(rtts: list, async_rtts: list, echo_proto: list, echo_streams: list) -> list[Figure]:
    """The RPC section's figures, the floor beside them (see :func:`rpc_floor`)."""
    rpc_p50, echo_p50 = median(rtts), median(echo_proto)
    floor = rpc_floor()
    floor_rt = echo_p50 + floor["crypto"] + floor["cbor"]
    return [
        Figure(
            "QMP RPC",
            f"round trip median ({ECHO_BODY}-byte echo, plain handler)",
            rpc_p50 * 1e3,
            "ms",
            claim=CLAIM_LATENCY_MS,
            claim_text="5 ms average",
            extra={"vs_raw_echo": rpc_p50 / echo_p50},
        ),
        Figure(
            "QMP RPC",
            "round trip p99",
            percentile(rtts, 0.99) * 1e3,
            "ms",
            claim=CLAIM_PEAK_MS,
            claim_text="20 ms peak",
        ),
        Figure(
            "QMP RPC",
            f"round trip median ({ECHO_BODY}-byte echo, async handler: a task per request)",
            median(async_rtts) * 1e3,
            "ms",
            extra={"vs_raw_echo": median(async_rtts) / echo_p50},
        ),
        Figure("QMP RPC", "raw asyncio echo median (Protocol both ends)", echo_p50 * 1e3, "ms"),
        Figure(
            "QMP RPC",
            "raw asyncio echo median (streams both ends)",
            median(echo_streams) * 1e3,
            "ms",
        ),
        Figure("QMP RPC", "RPC median / raw Protocol echo median", rpc_p50 / echo_p50, "x"),
        Figure(
            "QMP RPC floor",
            "2 seals + 2 opens of the request and reply frames (alone)",
            floor["crypto"] * 1e6,
            "us",
            extra={"aead_alone_us": round(floor["aead_alone"] * 1e6, 2)},
        ),
        Figure(
            "QMP RPC floor",
            "2 canonical CBOR encodes + 2 strict decodes (alone)",
            floor["cbor"] * 1e6,
            "us",
            extra={"cbor2_alone_us": round(floor["cbor2_alone"] * 1e6, 2)},
        ),
        Figure(
            "QMP RPC floor",
            "raw echo + that work, over the raw echo",
            floor_rt / echo_p50,
            "x",
            extra={"rpc_over_floor": rpc_p50 / floor_rt},
        ),
    ]


def pin_to_one_cpu() -> int | None:
    """``--one-cpu``: run this process and the servers it starts (they inherit it) on one CPU.

    On an idle machine with 2 virtual CPUs the scheduler may put a server on the other CPU
    than the client, and then every request and answer wakes a halted CPU: measured here,
    that adds about 35 us to a round trip (raw echo 20 -> 57 us). Where it does so differs
    from server to server and run to run, so the RPC and the raw echo beside it may not pay
    it alike, and the ratio says more about placement than about code. On one CPU both pay
    only a local switch; under load the machine behaves about so anyway."""
    cpus = sorted(os.sched_getaffinity(0))
    if not cpus:
        return None
    os.sched_setaffinity(0, {cpus[0]})
    return cpus[0]


def run_rpc_only(quick: bool, busy_ok: bool) -> list[Figure]:
    """Only the RPC section (``--rpc-only``): for before/after comparisons of the round trip."""
    load = check_quiet(quick, busy_ok)
    tune_allocator()
    server_identity = NodeIdentity.generate()
    client_identity = NodeIdentity.generate()
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp, "server.secret")
        secret.write_bytes(server_identity.to_secret_bytes())
        qmp_proc, qmp_port = start_server("qmp", str(secret))
        echo_proc, echo_ports = start_server_ports("echo")
        try:
            server_record = PeerRecord.create(
                server_identity, [f"127.0.0.1:{qmp_port}"], seq=1, now=time.time()
            )
            rounds = asyncio.run(
                _rpc_only_client(qmp_port, client_identity, server_record, quick, echo_ports)
            )
        finally:
            for proc in (qmp_proc, echo_proc):
                proc.kill()
                proc.wait()
    figures = rpc_figures(*rounds)
    return emit_with_loads(figures, load)


async def qmp_client(
    port: int,
    identity: NodeIdentity,
    server_record: PeerRecord,
    quick: bool,
    echo_ports: list[int],
):
    now = time.time()
    record = PeerRecord.create(identity, ["127.0.0.1:1"], seq=1, now=now)
    address = f"127.0.0.1:{port}"
    # Handshakes: record known, so one round trip (INIT / RESPONSE) plus TCP connect.
    latencies = []
    for _ in range(60 if quick else 300):
        t0 = time.perf_counter()
        link = await dial(address, identity, record, expected=server_record)
        latencies.append(time.perf_counter() - t0)
        link.close()
    # RPC round trips over one link, in blocks alternating with the raw echo's.
    link = await dial(address, identity, record, expected=server_record)
    rtts, async_rtts, echo_proto, echo_streams = await rpc_rounds(link, echo_ports, quick)
    # Idle link RTT: an encrypted ping after the link has been quiet for a while, the case
    # where a node's timers (not traffic) decide whether the event loop is awake.
    idle_rtts = []
    for _ in range(IDLE_SAMPLES_QUICK if quick else IDLE_SAMPLES):
        await asyncio.sleep(IDLE_QUIET_QUICK if quick else IDLE_QUIET)
        idle_rtts.append(await link.ping())
    link.close()
    return latencies, (rtts, async_rtts, echo_proto, echo_streams), idle_rtts


async def qmp_bulk(port: int, identity: NodeIdentity, server_record: PeerRecord, data: bytes):
    record = PeerRecord.create(identity, ["127.0.0.1:2"], seq=1, now=time.time())
    link = await dial(f"127.0.0.1:{port}", identity, record, expected=server_record)
    t0 = time.perf_counter()
    await link.send(len(data).to_bytes(8, "big"))
    view = memoryview(data)
    for off in range(0, len(data), CHUNK):
        await link.send(bytes(view[off : off + CHUNK]))
    digest = await link.recv()
    elapsed = time.perf_counter() - t0
    link.close()
    return elapsed, digest


async def stream_bulk(port: int, data: bytes, use_tls: bool):
    context = None
    if use_tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # a benchmark of the record layer, not of PKI
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    t0 = time.perf_counter()
    writer.write(len(data).to_bytes(8, "big"))
    view = memoryview(data)
    for off in range(0, len(data), CHUNK):
        writer.write(bytes(view[off : off + CHUNK]))
        await writer.drain()
    digest = await reader.readexactly(32)
    elapsed = time.perf_counter() - t0
    writer.close()
    return elapsed, digest


def run(quick: bool = False, busy_ok: bool = True) -> list[Figure]:
    """All figures. ``busy_ok`` defaults to True for ``bench/report.py`` (which has its own
    policy); the command line refuses a busy machine unless ``--busy-ok``."""
    load = check_quiet(quick, busy_ok)
    tune_allocator()  # the client ends of the links, as in a node
    figures: list[Figure] = []
    rounds = 30 if quick else 200
    figures += handshake_cost(rounds)
    init_cpu, resp_cold = handshake_cpu(rounds, warm=False)
    _, resp_warm = handshake_cpu(rounds, warm=True)
    figures += [
        Figure("QMP handshake", "initiator CPU (crypto + protocol)", init_cpu * 1e3, "ms"),
        Figure("QMP handshake", "responder CPU, new peer record", resp_cold * 1e3, "ms"),
        Figure("QMP handshake", "responder CPU, record seen before", resp_warm * 1e3, "ms"),
    ]
    server_identity = NodeIdentity.generate()
    client_identity = NodeIdentity.generate()
    data = os.urandom((64 if quick else 256) * 1024 * 1024)
    expected_digest = hashlib.sha256(data).digest()
    names = ("raw asyncio TCP", "TLS 1.3 (ssl)", "QMP")
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp, "server.secret")
        secret.write_bytes(server_identity.to_secret_bytes())
        make_cert(tmp)
        qmp_proc, qmp_port = start_server("qmp", str(secret))
        tcp_proc, tcp_port = start_server("tcp", tmp)
        tls_proc, tls_port = start_server("tls", tmp)
        echo_proc, echo_ports = start_server_ports("echo")
        try:
            server_record = PeerRecord.create(
                server_identity, [f"127.0.0.1:{qmp_port}"], seq=1, now=time.time()
            )
            latencies, (rtts, async_rtts, echo_proto, echo_streams), idle_rtts = asyncio.run(
                qmp_client(qmp_port, client_identity, server_record, quick, echo_ports)
            )
            makers = {
                names[0]: lambda: stream_bulk(tcp_port, data, False),
                names[1]: lambda: stream_bulk(tls_port, data, True),
                names[2]: lambda: qmp_bulk(qmp_port, client_identity, server_record, data),
            }
            # rounds: each transport once per round, so that load elsewhere hits all three
            per_round: list[dict[str, float]] = []
            for _ in range(1 if quick else 3):
                times = {}
                for name in names:
                    elapsed, digest = asyncio.run(makers[name]())
                    if digest != expected_digest:
                        raise SystemExit(f"{name}: the server received different bytes")
                    times[name] = elapsed
                per_round.append(times)
            results = {name: min(r[name] for r in per_round) for name in names}
        finally:
            for proc in (qmp_proc, tcp_proc, tls_proc, echo_proc):
                proc.kill()
                proc.wait()
    figures += [
        Figure(
            "QMP handshake",
            "latency median (TCP connect + 1 RTT, record known)",
            median(latencies) * 1e3,
            "ms",
            claim=CLAIM_LATENCY_MS,
            claim_text="5 ms average",
        ),
        Figure(
            "QMP handshake",
            "latency p99",
            percentile(latencies, 0.99) * 1e3,
            "ms",
            claim=CLAIM_PEAK_MS,
            claim_text="20 ms peak",
        ),
        Figure(
            "QMP link",
            f"idle RTT median (ping after {IDLE_QUIET_QUICK if quick else IDLE_QUIET:g} s quiet)",
            median(idle_rtts) * 1e3,
            "ms",
            claim=CLAIM_LATENCY_MS,
            claim_text="5 ms average",
        ),
        Figure("QMP link", "idle RTT max", max(idle_rtts) * 1e3, "ms"),
    ]
    figures += rpc_figures(rtts, async_rtts, echo_proto, echo_streams)
    raw = results[names[0]]
    for name, elapsed in results.items():
        gbps = len(data) * 8 / elapsed / 1e9
        figures.append(
            Figure(
                "bulk, one connection",
                name,
                gbps,
                "Gbit/s",
                claim=CLAIM_GBPS,
                claim_text="10 Gbps",
                higher_is_better=True,
                extra={
                    "vs_raw_tcp": raw / elapsed,
                    # the same ratio round by round: the worst is what "every run" means
                    "vs_raw_tcp_each_round": [round(r[names[0]] / r[name], 3) for r in per_round],
                    "vs_tls_each_round": [round(r[names[1]] / r[name], 3) for r in per_round],
                },
            )
        )
    return emit_with_loads(figures, load)


def main() -> None:
    tune_allocator()  # as a node does (qiz/allocator.py): both ends of every link measured
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        mode = sys.argv[2]
        if mode == "qmp":
            asyncio.run(serve_qmp(sys.argv[3]))
        elif mode == "echo":
            asyncio.run(serve_echo())
        else:
            asyncio.run(serve_stream(mode == "tls", sys.argv[3]))
        return
    rpc_only = "--rpc-only" in sys.argv
    cpu = pin_to_one_cpu() if "--one-cpu" in sys.argv else None
    measure = run_rpc_only if rpc_only else run
    figures = measure("--quick" in sys.argv, busy_ok="--busy-ok" in sys.argv)
    if cpu is not None:
        print(f"(client and servers pinned to CPU {cpu})")
    print()
    print(f"## QMP{' RPC' if rpc_only else ''} ({machine()})\n")
    print(markdown_table(figures))
    if rpc_only:
        return
    for f in figures:
        if "vs_raw_tcp" in f.extra:
            rounds = ", ".join(f"{r:.0%}" for r in f.extra["vs_raw_tcp_each_round"])
            print(
                f"{f.name}: {f.extra['vs_raw_tcp']:.0%} of raw asyncio TCP throughput "
                f"(each round: {rounds})"
            )
    loads = figures[0].extra
    print(
        f"\nLoad average (1 min) at the start {loads['load_average_1min']}, "
        f"at the end {loads['load_average_1min_end']}"
    )


if __name__ == "__main__":
    main()

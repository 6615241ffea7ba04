"""Network namespaces that behave like the Internet a mesh meets: a public network and home
networks behind NAT routers, built by the test itself and torn down however it ends.

Why namespaces: NAT traversal (docs/nat.md) can only be proven against real NATs, and the
kernel's own conntrack + nftables masquerade is one, in a namespace, with no machine or VM to
set up. The layout (docs/netns.md)::

    public network 10.77.0.0/24: one namespace holding a bridge ("br0", no address of its own)
      +-- public host   10.77.0.H          (no default route)
      +-- NAT router    10.77.0.R  "wan"   (masquerade on wan; forwards only lan -> wan and
            |                               replies; drops unsolicited packets from wan)
            +-- home network 192.168.N.0/24: a bridge "lan" in the router, 192.168.N.1
                  +-- home host 192.168.N.H (default route via 192.168.N.1)

Every veth pair is created inside a namespace with its peer placed straight into another
(``ip -n A link add ... peer ... netns B``): no interface ever exists in the root namespace,
whose routing is never touched, so nothing inside can reach the host's networks.

Names carry a per-run prefix (``qz`` + 4 hex digits) so that parallel runs and leftovers of
a crashed run never collide; namespaces with that scheme older than :data:`STALE_AFTER` are
removed when a new topology starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qiz.procs import LineReader, NodeProcess, child_setup, kill_group

PUBLIC_NET = "10.77.0"  # the public network's first three octets (a /24)
HOME_NET = "192.168.{}"  # home network N's first three octets (a /24 each)
NETNS_DIR = Path("/run/netns")
NAME_SCHEME = re.compile(r"^qz[0-9a-f]{4}-")
STALE_AFTER = 3600.0  # seconds: a namespace of our scheme this old belongs to a crashed run
PORT_PRESERVING = "port-preserving"
SYMMETRIC = "symmetric"
# What each kind puts after "masquerade". Plain masquerade keeps the source port whenever the
# resulting tuple is free: an endpoint-independent mapping. "fully-random" draws a fresh port
# for every new connection, hence a different one per destination (an endpoint-dependent,
# "symmetric" mapping). "random" (NF_NAT_RANGE_PROTO_RANDOM) would also do it but derives the
# port from a hash of the addresses: tests/test_netns_topology.py proves the choice.
MASQUERADE = {PORT_PRESERVING: "masquerade", SYMMETRIC: "masquerade random"}


def netns_unavailable() -> str | None:
    """Why network-namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (ip netns add, nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"network-namespace tests need '{tool}' (apt-get install {package}; make netns)"
    return None


def require_netns() -> None:
    """Skip the calling test (or module) with the reason when namespaces cannot be used."""
    import pytest

    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason, allow_module_level=True)


def _sh(*argv: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """One iproute2/nft command; on failure an error that quotes it and what it said."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def our_namespaces() -> list[str]:
    """Namespaces named by this module's scheme (any run's)."""
    listed = _sh("ip", "-j", "netns", "list", check=False).stdout.strip()
    names = [entry["name"] for entry in json.loads(listed)] if listed else []
    return [name for name in names if NAME_SCHEME.match(name)]


def remove_stale(
    older_than: float = STALE_AFTER, *, prefix: str = "", now: float | None = None
) -> list[str]:
    """Delete namespaces of this scheme (only those starting with ``prefix``, if given) older
    than ``older_than`` seconds at ``now``: left by a run killed before its teardown. Their
    names. A namespace's age is its /run/netns entry's mtime (set when it was added)."""
    removed = []
    now = time.time() if now is None else now
    for name in our_namespaces():
        if not name.startswith(prefix):
            continue
        with contextlib.suppress(OSError):
            if now - (NETNS_DIR / name).stat().st_mtime > older_than:
                _sh("ip", "netns", "del", name, check=False)
                removed.append(name)
    return removed


@dataclass
class Host:
    """A namespace with one address: a public host, a home host or a NAT router (whose
    ``ip`` is its public address)."""

    name: str  # the short name the test gave it
    netns: str  # the namespace's name (with the run's prefix)
    ip: str
    network: str  # "public" or the home network's name (its router's name)
    router: Host | None = None  # a home host's NAT router
    kind: str | None = None  # a router's NAT kind
    lan_ip: str | None = None  # a router's address on its home network
    hosts: int = 1  # the last host number handed out on a router's home network

    def __str__(self) -> str:
        return f"{self.name} ({self.netns}, {self.ip})"


@dataclass
class Topology:
    """A public network, NAT routers and hosts in namespaces; a context manager whose exit
    kills every process started in them and deletes every namespace, even when the body
    raised. ``Topology()`` does nothing until entered."""

    prefix: str = field(default_factory=lambda: "qz" + secrets.token_hex(2))
    hosts: dict[str, Host] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    nodes: list[NodeProcess] = field(default_factory=list)
    _next_public: int = 10
    _homes: int = 0

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> Topology:
        reason = netns_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        remove_stale()
        try:
            self.hub = self._namespace("-hub")  # "-" keeps it apart from host names
            self._ip(self.hub, "link", "add", "br0", "type", "bridge")
            self._ip(self.hub, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill what runs in the namespaces, then delete them (their interfaces go with them)."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()
        for proc in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(10)
        for netns in self.namespaces:  # anything else started in them (a command's children)
            for pid in _sh("ip", "netns", "pids", netns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for netns in reversed(self.namespaces):
            _sh("ip", "netns", "del", netns, check=False)
        self.namespaces.clear()
        self.nodes.clear()
        self.processes.clear()

    # ------------------------------------------------------------------ building

    def _namespace(self, short: str) -> str:
        netns = f"{self.prefix}-{short}"
        _sh("ip", "netns", "add", netns)
        self.namespaces.append(netns)
        self._ip(netns, "link", "set", "lo", "up")
        # IPv4 only (an interface added later takes "default"): no link-local IPv6 addresses
        # and routes on the veths, so the only paths are the ones built here
        settings = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
        if Path("/proc/sys/net/bridge").is_dir():
            # br_netfilter (loaded on the host by docker and the like) would pass bridged
            # frames through the namespace's IP hooks: a bridge here is a plain switch
            settings += [
                f"net.bridge.bridge-nf-call-{t}=0" for t in ("iptables", "ip6tables", "arptables")
            ]
        self.run_in(netns, "sysctl", "-qw", *settings)
        return netns

    def _ip(self, netns: str, *argv: str) -> None:
        _sh("ip", "-n", netns, *argv)

    def _wire(self, bridge_ns: str, bridge: str, port: str, netns: str, ifname: str) -> None:
        """A veth pair from ``bridge`` in ``bridge_ns`` (end ``port``) to ``ifname`` in
        ``netns``, created in ``bridge_ns`` with its peer placed straight into ``netns``."""
        self._ip(
            bridge_ns, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", netns
        )
        self._ip(bridge_ns, "link", "set", port, "master", bridge, "up")
        self._ip(netns, "link", "set", ifname, "up")

    def _add(self, name: str) -> str:
        if name in self.hosts or not re.fullmatch(r"[a-z0-9]{1,8}", name):
            raise ValueError(f"host name {name!r} taken or not 1-8 of [a-z0-9]")
        return self._namespace(name)

    def public_host(self, name: str) -> Host:
        """A host on the public network: its own address, no route beyond the /24."""
        netns = self._add(name)
        ip = f"{PUBLIC_NET}.{self._take_public()}"
        self._wire(self.hub, "br0", f"p-{name}", netns, "eth0")
        self._ip(netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        host = Host(name, netns, ip, "public")
        self.hosts[name] = host
        return host

    def router(self, name: str, kind: str = PORT_PRESERVING, *, resets: bool = False) -> Host:
        """A NAT router: "wan" on the public network, a bridge "lan" with 192.168.N.1/24 for
        its home network, forwarding on, and nftables rules that make it a home NAT:
        masquerade on wan (``kind`` says how ports are chosen), forward lan -> wan and the
        replies only. Unsolicited packets from wan for the router itself (a SYN to a port
        with no mapping) are dropped silently, as most home routers do; ``resets=True``
        lets its own stack answer them (a RST, as a Linux box without a firewall does),
        which fails a punch whose first SYN arrives before the local one left."""
        if kind not in MASQUERADE:
            raise ValueError(f"NAT kind {kind!r}: one of {sorted(MASQUERADE)}")
        netns = self._add(name)
        self._homes += 1
        ip = f"{PUBLIC_NET}.{self._take_public()}"
        lan_ip = f"{HOME_NET.format(self._homes)}.1"
        self._wire(self.hub, "br0", f"p-{name}", netns, "wan")
        self._ip(netns, "addr", "add", f"{ip}/24", "dev", "wan")
        self._ip(netns, "link", "add", "lan", "type", "bridge")
        self._ip(netns, "addr", "add", f"{lan_ip}/24", "dev", "lan")
        self._ip(netns, "link", "set", "lan", "up")
        self.run_in(netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        rules = f"""
table inet qiznat {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state established,related accept
        {"" if resets else 'iifname "wan" drop'}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" {MASQUERADE[kind]}
    }}
}}
"""
        result = subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "-f", "-"],
            input=rules,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"nft rules for {name} ({kind}): {result.stderr.strip()}")
        host = Host(name, netns, ip, "public", kind=kind, lan_ip=lan_ip)
        self.hosts[name] = host
        return host

    def home_host(self, router: Host | str, name: str) -> Host:
        """A host on ``router``'s home network, its default route via the router."""
        router = self.host(router)
        if router.lan_ip is None:
            raise ValueError(f"{router} is not a NAT router")
        netns = self._add(name)
        router.hosts += 1
        ip = f"{router.lan_ip.rsplit('.', 1)[0]}.{router.hosts}"
        self._wire(router.netns, "lan", f"l-{name}", netns, "eth0")
        self._ip(netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        self._ip(netns, "route", "add", "default", "via", router.lan_ip)
        host = Host(name, netns, ip, router.name, router=router)
        self.hosts[name] = host
        return host

    def _take_public(self) -> int:
        self._next_public += 1
        return self._next_public - 1

    # ------------------------------------------------------------------ using

    def host(self, host: Host | str) -> Host:
        return self.hosts[host] if isinstance(host, str) else host

    def ip_of(self, host: Host | str) -> str:
        """A host's address (a router's public one)."""
        return self.host(host).ip

    def public_ip_of(self, host: Host | str) -> str:
        """The address the public network sees ``host`` at: its router's, behind NAT."""
        host = self.host(host)
        return host.router.ip if host.router is not None else host.ip

    def _netns(self, where: Host | str) -> str:
        if isinstance(where, Host):
            return where.netns
        return self.hosts[where].netns if where in self.hosts else where

    def prefix_argv(self, where: Host | str) -> list[str]:
        """The argv prefix that runs a command in ``where`` (a host, its name or a netns)."""
        return ["ip", "netns", "exec", self._netns(where)]

    def run_in(
        self,
        where: Host | str,
        *argv: str,
        timeout: float = 20.0,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``where`` to its end; output captured as text."""
        result = subprocess.run(
            [*self.prefix_argv(where), *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {where} failed: {result.stderr.strip()}")
        return result

    def python(
        self, where: Host | str, code: str, *args: str, timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        """``python -c code args`` in ``where``, not checked (the caller reads the outcome)."""
        return self.run_in(where, sys.executable, "-c", code, *args, timeout=timeout, check=False)

    def spawn(self, where: Host | str, *argv: str, **kwargs: Any) -> subprocess.Popen:
        """A long-running process in ``where`` (its own process group, dying with this
        process), killed at teardown."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(
            [*self.prefix_argv(where), *argv],
            process_group=0,
            preexec_fn=child_setup(),  # noqa: PLW1509 - prctl is looked up before the fork
            **kwargs,
        )
        self.processes.append(proc)
        return proc

    def spawn_python(
        self, where: Host | str, code: str, *args: str, **kwargs: Any
    ) -> subprocess.Popen:
        """:meth:`spawn` of ``python -c code args`` (text output)."""
        kwargs.setdefault("text", True)
        return self.spawn(where, sys.executable, "-c", code, *args, **kwargs)

    def start_node(
        self,
        where: Host | str,
        home: Path | str,
        *,
        cwd: Path,
        port: int = 0,
        peers: Iterable[str] = (),
        args: Sequence[str] = ("--no-worker", "--no-api"),
        env: dict[str, str] | None = None,
        ready: bool = True,
        module: str = "qiz",
    ) -> NetnsNode:
        """``qiz node start --json --listen HOST-IP:PORT`` in ``where``, with ``home``
        relative to ``cwd`` (its control socket is a filesystem path, which works across
        network namespaces: the test talks to it from the root namespace); killed at
        teardown. Waits for its ready line unless ``ready=False``. ``module``: what ``python
        -m`` runs (a wrapper of qiz's CLI, e.g. bench/nat_node.py's)."""
        host = self.host(where)
        node = NetnsNode(
            self.prefix_argv(host),
            home,
            listen=f"{host.ip}:{port}",
            peers=peers,
            args=args,
            cwd=cwd,
            env=env,
            name=f"{host.name}:{Path(home).name}",
            module=module,
        )
        self.nodes.append(node)
        if ready:
            node.wait_ready(60)
        return node


class NetnsNode(NodeProcess):
    """A :class:`~qiz.procs.NodeProcess` run through ``ip netns exec`` with its own listen
    address; everything else (ready line, control requests, kill) is the parent's."""

    def __init__(
        self,
        prefix: Sequence[str],
        home: Path | str,
        *,
        listen: str,
        peers: Iterable[str] = (),
        args: Iterable[str] = (),
        cwd: Path,
        env: dict[str, str] | None = None,
        name: str | None = None,
        module: str = "qiz",
    ) -> None:
        self.cwd = Path(cwd)
        self.home = Path(home)
        self.name = name or self.home.name
        self.log_path = self.cwd / self.home / "node.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.ready = None
        command = [*prefix, sys.executable, "-m", module, "--home", str(self.home)]
        command += ["node", "start", "--json", "--listen", listen, *args]
        for peer in peers:
            command += ["--peer", peer]
        self._stdout_copy = self.log_path.with_suffix(".out").open("wb")
        with self.log_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                process_group=0,
                preexec_fn=child_setup(),  # noqa: PLW1509 - prctl is looked up before the fork
            )
        self.group = self.proc.pid
        assert self.proc.stdout is not None
        self.stdout = LineReader(self.proc.stdout, self._stdout_copy)

    def status(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The node's status over its control socket, or None if it does not answer."""
        if not self.alive():
            raise AssertionError(f"node {self.name} exited: {self.tail()}")
        try:
            return self.request("status", timeout)["result"]
        except (ConnectionError, TimeoutError):
            return None

    def stop(self) -> None:
        """SIGTERM and wait (a clean stop); SIGKILL if it does not stop within 10 s."""
        if self.alive():
            kill_group(self.group, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(10)
        self.kill()


def home_networks(net: Topology, homes: dict[str, str]) -> dict[str, Host]:
    """The layout the NAT tests share: for each ``name: kind`` of ``homes``, a NAT router
    named ``r`` + name of that kind and a home host ``name`` behind it. The home hosts by
    name."""
    return {name: net.home_host(net.router(f"r{name}", kind), name) for name, kind in homes.items()}


def start_mesh(
    net: Topology,
    cwd: Path,
    boot: Host | str,
    homes: Iterable[Host | str],
    *,
    args: Sequence[str] = ("--no-worker", "--no-api"),
    env: dict[str, str] | None = None,
) -> tuple[NetnsNode, dict[str, NetnsNode]]:
    """A node on ``boot`` (a public host, listening on its address, any port) and one on each
    of ``homes`` bootstrapping from it, started side by side. Homes are ``cwd/HOSTNAME``
    (already initialised: ``qiz init``); every node is ready when this returns."""
    boot = net.host(boot)
    first = net.start_node(boot, boot.name, cwd=cwd, args=args, env=env)
    started = {
        net.host(h).name: net.start_node(
            h, net.host(h).name, cwd=cwd, peers=[first.bootstrap], args=args, env=env, ready=False
        )
        for h in homes
    }
    for node in started.values():
        node.wait_ready(60)
    return first, started


# ---------------------------------------------------------------------------- looking at bytes

# Run in a namespace: every frame on one interface (both directions) through a raw AF_PACKET
# socket (tcpdump is not installed and not needed), TCP payloads searched for the markers
# given as arguments, a marker split across two segments of one flow included (the last bytes
# of each flow are kept). Prints "ready", then, once its stdin closes, one JSON line.
_CAPTURE = r"""
import json, os, select, socket, struct, sys
ifname, markers = sys.argv[1], [m.encode() for m in sys.argv[2:]]
keep = max(map(len, markers), default=1) - 1
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
sock.bind((ifname, 0))
found = dict.fromkeys(sys.argv[2:], 0)
frames = payload = 0
by_pair = {}
tails = {}
print("ready", flush=True)
while True:
    ready, _, _ = select.select([sock, 0], [], [])
    if 0 in ready and not os.read(0, 1):
        break
    if sock not in ready:
        continue
    frame = sock.recv(1 << 16)
    frames += 1
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        continue
    ihl = (frame[14] & 15) * 4
    tcp = 14 + ihl
    total = struct.unpack("!H", frame[16:18])[0]
    data = frame[tcp + (frame[tcp + 12] >> 4) * 4 : 14 + total]
    if not data:
        continue
    src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
    pair = f"{src}>{dst}"
    by_pair[pair] = by_pair.get(pair, 0) + len(data)
    payload += len(data)
    flow = (frame[26:34], frame[tcp : tcp + 4])
    window = tails.get(flow, b"") + data
    for marker, text in zip(markers, found):
        found[text] += window.count(marker)
    tails[flow] = window[-keep:] if keep else b""
print(json.dumps({"frames": frames, "payload": payload, "by_pair": by_pair, "found": found}))
"""


@dataclass
class Capture:
    """A running capture (:meth:`Topology.capture`); :meth:`stop` ends it and returns what it
    saw: ``frames``, TCP ``payload`` bytes, payload bytes ``by_pair`` ("src>dst"), and how
    often each marker was ``found``."""

    proc: subprocess.Popen

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)  # closes its stdin: the end
        lines = out.strip().splitlines()
        if self.proc.returncode != 0 or not lines or lines[-1] == "ready":
            raise RuntimeError(f"capture failed: {err.strip()}")
        return json.loads(lines[-1])


def capture(
    net: Topology, where: Host | str, markers: Iterable[str], ifname: str = "eth0"
) -> Capture:
    """Capture every frame on ``ifname`` in ``where`` from now until :meth:`Capture.stop`,
    counting the ``markers`` in TCP payloads (an AF_PACKET socket in the namespace: what
    anything on that wire could read)."""
    proc = net.spawn_python(where, _CAPTURE, ifname, *markers, stdin=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"capture in {where} did not start: {proc.communicate()[1].strip()}")
    return Capture(proc)


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether process ``pid``'s writable memory (heap, anonymous maps, stacks) holds
    ``needle`` anywhere, now: what it ever decrypted or built and has not yet overwritten.
    Needs root (ptrace access to /proc/PID/mem)."""
    keep = len(needle) - 1
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if len(fields) < 2 or not fields[1].startswith("rw"):
                continue
            if len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            tail = b""
            for at in range(start, end, 1 << 22):
                try:
                    mem.seek(at)
                    chunk = mem.read(min(1 << 22, end - at))
                except OSError:  # a region that vanished or cannot be read
                    break
                if needle in tail + chunk:
                    return True
                tail = chunk[-keep:]
    return False

"""The namespace harness (tests/netns.py) behaves like the Internet a mesh meets: NAT routers
rewrite sources to their public address, a port-preserving NAT keeps a bound port for every
destination and a symmetric one does not, nothing unsolicited gets in, TCP simultaneous open
(what hole punching relies on, docs/nat.md §5) works between two port-preserving NATs and not
with a symmetric one, nothing inside reaches the host's networks, and nothing is left behind.

No qiz nodes here: small socket scripts run inside the namespaces (``python -c``), so that a
failure points at the topology, not at the mesh.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from .netns import (
    PORT_PRESERVING,
    SYMMETRIC,
    Topology,
    our_namespaces,
    remove_stale,
    require_netns,
)

require_netns()
pytestmark = pytest.mark.timeout(60)

# A STUN-like observer: for every connection on any of its ports, it tells the dialler the
# address it sees it from ("ip:port\n"), prints the same, and closes first (no TIME_WAIT left
# on the dialler's side).
OBSERVER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[1:]:
    sel.register(socket.create_server(("0.0.0.0", int(port))), selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, (ip, port) = key.fileobj.accept()
        conn.sendall(f"{ip}:{port}\\n".encode())
        conn.close()
        print(f"{ip}:{port}", flush=True)
"""

# Dial each destination in turn from one bound port (SO_REUSEADDR + SO_REUSEPORT, as a node
# dials from its listen port, docs/nat.md §5.1); print what each observer saw, as JSON.
DIAL_FROM = """
import json, socket, sys
port = int(sys.argv[1])
seen = []
for dst in sys.argv[2:]:
    ip, dport = dst.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("0.0.0.0", port))
    s.settimeout(2)
    s.connect((ip, int(dport)))
    seen.append(s.makefile().readline().strip())
    s.close()
print(json.dumps(seen))
"""

# One connection attempt: "connected" or the exception's class name.
TRY_CONNECT = """
import socket, sys
ip, port = sys.argv[1].rsplit(":", 1)
try:
    socket.create_connection((ip, int(port)), timeout=float(sys.argv[2])).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""

LISTEN = """
import socket, sys
server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    server.accept()[0].close()
"""

# One side of a hole punch: listen on PORT and dial from it (both SO_REUSEADDR +
# SO_REUSEPORT), learn the external address from the observer, print it, read the other
# side's external address from stdin, connect to it, and trade names over the connection.
PUNCH = """
import json, socket, sys
name, port, observer, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
def bound():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("0.0.0.0", port))
    return s
listener = bound()
listener.listen()
probe = bound()
ip, oport = observer.rsplit(":", 1)
probe.connect((ip, int(oport)))
print(probe.makefile().readline().strip(), flush=True)
probe.close()
ip, pport = sys.stdin.readline().strip().rsplit(":", 1)
s = bound()
s.settimeout(timeout)
try:
    s.connect((ip, int(pport)))
    s.sendall(name.encode())
    print(json.dumps({"peer": "%s:%d" % s.getpeername(), "heard": s.recv(100).decode()}))
except OSError as exc:
    print(json.dumps({"error": type(exc).__name__}))
"""


def observer(net: Topology, host: str, *ports: int) -> subprocess.Popen:
    proc = net.spawn_python(host, OBSERVER, *map(str, ports))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def dial_from(net: Topology, host: str, port: int, *destinations: str) -> list[str]:
    """The addresses the observers at ``destinations`` saw ``host`` dial from ``port`` at."""
    result = net.python(host, DIAL_FROM, str(port), *destinations)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def try_connect(net: Topology, host: str, address: str, timeout: float = 1.5) -> str:
    result = net.python(host, TRY_CONNECT, address, str(timeout))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def punch(
    net: Topology, a: str, b: str, port: int, timeout: float, late: float = 0.0
) -> tuple[dict, dict, dict]:
    """Both sides of a simultaneous open, ``b`` starting ``late`` seconds after ``a``: (their
    observed addresses, a's outcome, b's)."""
    watcher = observer(net, "obs", 3478)
    sides = {
        h: net.spawn_python(
            h, PUNCH, h, str(port), "10.77.0.10:3478", str(timeout), stdin=subprocess.PIPE
        )
        for h in (a, b)
    }
    seen = {h: proc.stdout.readline().strip() for h, proc in sides.items()}
    assert all(seen.values()), [p.communicate(timeout=10) for p in sides.values()]
    for h, other in ((a, b), (b, a)):  # at about the same time, or b late
        if h == b and late:
            time.sleep(late)  # the scenario, not a wait for a condition
        sides[h].stdin.write(seen[other] + "\n")
        sides[h].stdin.flush()
    outcome = {}
    for h, proc in sides.items():
        out, err = proc.communicate(timeout=timeout + 10)
        assert proc.returncode == 0, err
        outcome[h] = json.loads(out)
    watcher.kill()
    return seen, outcome[a], outcome[b]


@pytest.fixture
def net():
    """Observer on 10.77.0.10; a, b behind port-preserving routers pp1, pp2; c behind the
    symmetric router sym."""
    with Topology() as topo:
        assert topo.public_host("obs").ip == "10.77.0.10"
        topo.public_host("obs2")
        for router, kind, host in (
            ("pp1", PORT_PRESERVING, "a"),
            ("pp2", PORT_PRESERVING, "b"),
            ("sym", SYMMETRIC, "c"),
        ):
            topo.home_host(topo.router(router, kind), host)
        yield topo


def test_a_home_host_reaches_a_public_host_from_its_routers_public_address(net) -> None:
    watcher = observer(net, "obs", 9000)
    for host, router in (("a", "pp1"), ("c", "sym")):
        (seen,) = dial_from(net, host, 0, "10.77.0.10:9000")
        assert seen.split(":")[0] == net.ip_of(router) == net.public_ip_of(host)
        assert watcher.stdout.readline().strip() == seen
        assert net.ip_of(host).startswith("192.168.")


def test_a_port_preserving_nat_keeps_the_bound_port_for_every_destination(net) -> None:
    observer(net, "obs", 9000, 9001)
    observer(net, "obs2", 9000)
    seen = dial_from(net, "a", 40000, "10.77.0.10:9000", "10.77.0.11:9000", "10.77.0.10:9001")
    assert seen == [f"{net.ip_of('pp1')}:40000"] * 3


def test_a_symmetric_nat_maps_each_destination_to_its_own_port(net) -> None:
    observer(net, "obs", 9000, 9001)
    observer(net, "obs2", 9000)
    seen = dial_from(net, "c", 40000, "10.77.0.10:9000", "10.77.0.11:9000", "10.77.0.10:9001")
    assert {address.split(":")[0] for address in seen} == {net.ip_of("sym")}
    ports = [int(address.split(":")[1]) for address in seen]
    # "masquerade random" draws each mapping's port from a keyed hash of the addresses: two of
    # three destinations share a port with probability ~3/64,000, all three ~1 in 4 billion
    assert len(set(ports)) >= 2 and ports != [40000] * 3, ports


def test_nothing_unsolicited_gets_in(net) -> None:
    listener = net.spawn_python("a", LISTEN, "9000")
    assert listener.stdout.readline().strip() == "ready"
    # the private address is not routed on the public network ...
    assert try_connect(net, "obs", f"{net.ip_of('a')}:9000") == "OSError"  # ENETUNREACH
    # ... nor a port of the router that nothing inside opened
    assert try_connect(net, "obs", f"{net.ip_of('pp1')}:9000") == "TimeoutError"
    # ... and a neighbour on the public segment that routes the home network through the
    # router (as an attacker on the same LAN could) is dropped by its forward chain
    net.run_in("obs", "ip", "route", "add", "192.168.1.0/24", "via", net.ip_of("pp1"))
    assert try_connect(net, "obs", f"{net.ip_of('a')}:9000") == "TimeoutError"
    # the same listener is reached from inside its home network
    net.home_host("pp1", "a2")
    assert try_connect(net, "a2", f"{net.ip_of('a')}:9000") == "connected"


def test_simultaneous_open_through_two_port_preserving_nats(net) -> None:
    seen, a, b = punch(net, "a", "b", 41000, timeout=3)
    assert seen == {"a": f"{net.ip_of('pp1')}:41000", "b": f"{net.ip_of('pp2')}:41000"}
    assert a == {"peer": seen["b"], "heard": "b"}
    assert b == {"peer": seen["a"], "heard": "a"}


def test_a_late_side_still_meets_the_other_while_it_is_connecting(net) -> None:
    # a's SYN reaches pp2 before b's mapping exists and is dropped there; b's SYN, 1.5 s
    # later, finds pp1's mapping for a's attempt (conntrack SYN_SENT, 120 s) and a's socket
    # still connecting: the simultaneous open completes when b's SYN arrives, no retransmit
    # needed. The window is the early side's connect timeout.
    seen, a, b = punch(net, "a", "b", 41000, timeout=4, late=1.5)
    assert a == {"peer": seen["b"], "heard": "b"}
    assert b == {"peer": seen["a"], "heard": "a"}


def test_a_late_side_fails_the_punch_when_its_router_answers_with_a_reset(net) -> None:
    # a router whose stack answers a SYN it has no mapping for (no firewall) sends a RST to
    # the early side, which gives up at once; the late side's SYN then finds nobody
    net.home_host(net.router("rst", PORT_PRESERVING, resets=True), "d")
    seen, a, d = punch(net, "a", "d", 41000, timeout=3, late=1.0)
    assert seen["d"] == f"{net.ip_of('rst')}:41000"
    assert a == {"error": "ConnectionRefusedError"}
    assert "peer" not in d, d


def test_simultaneous_open_fails_with_a_symmetric_nat_on_one_side(net) -> None:
    seen, a, c = punch(net, "a", "c", 41000, timeout=2)
    assert seen["c"].split(":")[0] == net.ip_of("sym")
    assert a == c == {"error": "TimeoutError"}


def test_no_namespace_reaches_the_hosts_networks(net) -> None:
    routes = {
        name: json.loads(net.run_in(host, "ip", "-j", "route").stdout)
        for name, host in net.hosts.items()
    }
    for name, table in routes.items():
        defaults = [route for route in table if route["dst"] == "default"]
        router = net.hosts[name].router
        assert defaults == ([] if router is None else [defaults[0]]), (name, table)
        if router is not None:
            assert defaults[0]["gateway"] == router.lan_ip
    host_addresses = [
        info["local"]
        for link in json.loads(
            subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
        )
        for info in link.get("addr_info", [])
        if not info["local"].startswith("127.") and info["local"] != "::1"
    ]
    for host in [*net.hosts.values(), net.hub]:
        for address in host_addresses:  # asked of the routing table: no packet is sent
            route = net.run_in(host, "ip", "route", "get", address, check=False)
            if getattr(host, "router", None) is not None and route.returncode == 0:
                assert f"via {host.router.lan_ip}" in route.stdout  # only its router, which:
                continue
            assert route.returncode != 0, (host, address, route.stdout)
    # 127.0.0.1 inside a namespace is its own loopback, not the host's
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        for name in net.hosts:
            assert try_connect(net, name, f"127.0.0.1:{port}") == "ConnectionRefusedError"


def test_teardown_removes_everything_even_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="body failed"), Topology() as topo:
        topo.home_host(topo.router("r", SYMMETRIC), "h")
        topo.public_host("p")
        sleeper = topo.spawn("h", "sleep", "600")
        names = list(topo.namespaces)
        assert len(names) == 4 and set(names) <= set(our_namespaces())
        raise RuntimeError("body failed")
    assert sleeper.poll() is not None
    assert not set(names) & set(our_namespaces())


def test_leftovers_of_a_crashed_run_are_removed_after_an_hour() -> None:
    topo = Topology().__enter__()  # a run that never reaches its teardown
    try:
        topo.public_host("p")
        assert remove_stale(prefix=topo.prefix) == []  # fresh: another run's, left alone
        gone = remove_stale(prefix=topo.prefix, now=time.time() + 3700)
        assert sorted(gone) == sorted(topo.namespaces)
        assert not [n for n in our_namespaces() if n.startswith(topo.prefix)]
    finally:
        topo.close()

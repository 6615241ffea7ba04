"""Relays and hole punching wired into real nodes, on loopback (docs/nat.md §2-§5).

On loopback everyone can dial everyone, so the test makes one node private the way a NAT would
look to it: the address it asks to be dialled back at answers nobody. The node must then reserve
on a reachable peer, publish that relay and no address, be reached through a circuit by a node
that only knows its id, and the dialler's punch must then leave the relay for a direct link.
The same through real NATs is tests/test_netns_nat.py."""

from __future__ import annotations

import socket

from qiz.qmp.autonat import NatConfig

from .helpers import async_eventually, make_node, run, running


def test_a_private_node_is_reached_through_its_relay_then_directly() -> None:
    async def body() -> None:
        relay = make_node(nat=NatConfig(check_every=3600))
        hidden = make_node(nat=NatConfig(check_every=3600))
        dialler = make_node(nat=NatConfig(check_every=3600))
        async with running(relay):
            hidden.bootstrap = [(relay.address, relay.node_id)]
            dialler.bootstrap = [(relay.address, relay.node_id)]
            async with running(hidden):
                await hidden.joined.wait()
                with socket.socket() as dead:  # where "the NAT" would drop a dial back
                    dead.bind(("127.0.0.1", 0))
                    real = list(hidden.nat.state.listen)
                    hidden.nat.state.set_listen([f"127.0.0.1:{dead.getsockname()[1]}"])
                    assert await hidden.nat.check() == "private"
                    hidden.nat.state.set_listen(real)
                # behind a real NAT the relay would never have taken it as a DHT contact (it
                # connects from an address its record does not name): forget it here too
                relay.dht.table.remove(hidden.node_id.digest)
                # it reserves on the relay and publishes it, with no address
                await async_eventually(lambda: relay.node_id in hidden.relays.held)
                record = hidden.record()
                assert record.addresses == ()
                assert [r.node_id for r in record.relays] == [relay.node_id]
                assert relay.status()["nat"]["reachability"] == "public"
                async with running(dialler):
                    await dialler.joined.wait()

                    async def published() -> bool:
                        found = await dialler.dht.resolve_peer(hidden.node_id, use_cache=False)
                        return bool(found.relays) and not found.addresses

                    await async_eventually(published, what="the new record found in the DHT")
                    assert hidden.node_id not in dialler.links.peers
                    # the dialler knows only its id: the DHT gives the record, the relay a circuit
                    answer = await dialler.connect_peer(str(hidden.node_id))
                    assert answer["node_id"] == str(hidden.node_id)
                    assert not answer["already_linked"]
                    # the punch (on loopback, a dial from the listen port) goes direct
                    await async_eventually(
                        lambda: dialler.punch.book.counters["punch_direct"] == 1,
                        what="a punch that went direct",
                    )
                    await async_eventually(
                        lambda: (
                            dialler.links.peers[hidden.node_id].link not in dialler.links.relayed
                        ),
                        what="the direct link as the primary",
                    )
                    rows = {row["node_id"]: row for row in dialler.links.peer_rows()}
                    assert rows[str(hidden.node_id)]["path"] == "direct"
                    # the relayed link closes after the grace; both ends keep the direct one
                    await async_eventually(
                        lambda: not dialler.links.relayed and not hidden.links.relayed,
                        what="the relayed link closed at both ends",
                    )
                    rpc = dialler.links.peers[hidden.node_id].rpc
                    assert await rpc.call("qmp.ping", b"x") == b"x"

    run(body(), timeout=60)

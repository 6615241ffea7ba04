"""NAT types, AutoNAT, relay reservations and hole punching at 10,000 nodes, as a model.

The question ``docs/nat.md`` leaves open is one of proportions: with a realistic mix of public
nodes and NATs, how many node pairs can link at all, how many end up direct, and how much do the
reachable nodes pay as relays? Real NATs are proven in network namespaces (issue 18, item 5);
this module answers the proportions at a scale namespaces cannot reach, from the rules of
``docs/nat.md``:

* every node is *public*, behind an endpoint-independent port-preserving NAT, or behind a
  symmetric NAT (a new external port per destination); a fraction of the port-preserving NATs
  fail to preserve the port (another host behind the same NAT already holds it), which breaks a
  punch as a symmetric NAT would;
* AutoNAT (§2): each node asks up to 3 peers to dial it back; an answer is wrong with a small
  probability (a false "failed" from loss or a firewalled helper is far likelier than a false
  "reached", which needs a liar: the dial-back must reach the asker's node id). The node's
  verdict is the live one (a vote of the answers, a tie to public) or, for comparison, a
  strict majority of the answers;
* reservations (§3, §6): a node that believes itself private reserves on ``reserve_on`` relays
  among the relay-serving peers it dialled, best score first, then nearest; a relay holding
  ``max_reservations`` (or ``max_reservations_per_prefix`` from the node's /24) refuses and the
  node tries the next (and, if its own peers are exhausted, the nearest relays it can learn of);
* a dialler (§4.3) dials the target's published address, else opens a circuit through the
  target's relays in record order, then punches (§5): direct when either side is public, or
  when both sit behind port-preserving NATs that kept the port and one of
  ``punch_attempts`` tries succeeds (each fails with ``punch_failure``: loss, timing);
* relay load: every node keeps ``links_per_node`` links on average; each link that must stay
  relayed holds a circuit on one of the target's relays, within ``max_circuits`` per relay and
  ``max_circuits_per_peer`` per target and per dialler (§6); a circuit no relay admits is
  refused and the pair stays unlinked.

As the DHT simulator runs the live routing code, this model runs the live decision cores where
they exist: every relay is a :class:`~qiz.qmp.relay.RelayCore` that admits or refuses
reservations and circuits by its own limits and reasons, and verdicts come from the live
:class:`~qiz.qmp.observed.NatState`; the defaults are the live node's.

Nothing evolves over time here, so there is no event queue: the model is a set of seeded numpy
draws (one independent stream per stage, so asking for more pairs does not change the nodes),
and times are sums of modelled round trips. Node pairs are reported two ways: exactly, as the
expected share over all ordered pairs (the punch draws replaced by their probability), and
sampled, from ``pairs`` random ordered pairs with real draws, which also yields times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qiz import QizError
from qiz.qmp.autonat import AUTONAT_PEERS
from qiz.qmp.observed import NatState
from qiz.qmp.punch import MAX_PUNCH_ATTEMPTS, PUNCH_TIMEOUT
from qiz.qmp.relay import End, Refusal, RelayConfig, RelayCore, network_prefix
from qiz.trust.scores import INITIAL

PUBLIC, PRESERVING, SYMMETRIC = 0, 1, 2
KINDS = ("public", "port-preserving", "symmetric")
FIRST, PUNCHED, RELAYED, NEVER = 0, 1, 2, 3
OUTCOMES = ("direct first try", "direct after punching", "relayed only", "never")

# docs/nat.md §5.2: attempts are 1 s apart (PUNCH_TIMEOUT, the other cost of a failed attempt,
# is the live node's own constant).
PUNCH_PAUSE = 1.0
_RELAY = RelayConfig()  # the live defaults of [relay]


class NatSimError(QizError):
    """The NAT model was asked for something it cannot model (a mix that does not add up)."""


@dataclass(frozen=True)
class NatSimConfig:
    """The population and the protocol's parameters; the protocol's defaults are a live
    node's (``RelayConfig``, ``qiz.qmp.punch``, ``qiz.qmp.autonat``)."""

    nodes: int = 10_000
    public: float = 0.30
    preserving: float = 0.50
    symmetric: float = 0.20
    preservation_fails: float = 0.0  # share of port-preserving NATs that fail to keep the port
    punch_failure: float = 0.0  # probability that one punch attempt fails (loss, timing)
    punch_attempts: int = MAX_PUNCH_ATTEMPTS
    autonat_peers: int = AUTONAT_PEERS
    autonat_false_fail: float = 0.02  # a public node's dial-back fails anyway
    autonat_false_reach: float = 0.001  # a private node is told it was reached (a liar)
    autonat_rule: str = "spec"  # "spec": the live NatState (a vote, ties public); "majority"
    reserve_on: int = _RELAY.reserve_on
    max_reservations: int = _RELAY.max_reservations
    max_reservations_per_prefix: int = _RELAY.max_reservations_per_prefix
    max_circuits: int = _RELAY.max_circuits
    max_circuits_per_peer: int = _RELAY.max_circuits_per_peer
    relay_search: int = 32  # relays a node asks beyond its own peers when those are full
    links_per_node: int = 20  # mean links a node keeps (half of them it dialled)
    scored: float = 0.3  # share of peers whose score moved away from INITIAL
    pairs: int = 200_000
    rtt_base: float = 0.005  # seconds: a round trip between neighbours
    rtt_span: float = 0.200  # seconds added across the whole (unit square) map

    def __post_init__(self) -> None:
        mix = (self.public, self.preserving, self.symmetric)
        if min(mix) < 0 or abs(sum(mix) - 1.0) > 1e-9:
            raise NatSimError(f"the node mix must be shares adding up to 1, not {mix}")
        if self.nodes < 2:
            raise NatSimError("the NAT model needs at least 2 nodes")
        for name in ("preservation_fails", "punch_failure", "autonat_false_fail"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise NatSimError(f"{name} is a probability, not {getattr(self, name)!r}")
        if not 0.0 <= self.autonat_false_reach <= 1.0 or not 0.0 <= self.scored <= 1.0:
            raise NatSimError("autonat_false_reach and scored are probabilities")
        for name in ("punch_attempts", "autonat_peers", "relay_search", "pairs"):
            if getattr(self, name) < 1:
                raise NatSimError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        if self.links_per_node < 2:
            raise NatSimError("links_per_node must be at least 2 (every node dials one peer)")
        if self.autonat_rule not in ("spec", "majority"):
            raise NatSimError(f"autonat_rule is 'spec' or 'majority', not {self.autonat_rule!r}")


@dataclass
class Population:
    """The nodes: what they are, what they believe, where they sit and whom they reserved on."""

    kind: np.ndarray  # PUBLIC / PRESERVING / SYMMETRIC
    preserve_fails: np.ndarray  # bool: a port-preserving NAT that did not keep the port
    xy: np.ndarray  # (n, 2) coordinates in the unit square (RTT grows with distance)
    score: np.ndarray  # the score other nodes give this one
    reached: np.ndarray  # AutoNAT: "reached" answers received
    answers: np.ndarray  # AutoNAT: answers received
    publishes_direct: np.ndarray  # bool: believes itself public (or unknown): no relays
    serves_relay: np.ndarray  # bool: really reachable and believes it (relay enabled)
    out_links: list[np.ndarray]  # the peers each node dialled
    relays: np.ndarray  # (n, reserve_on) relay indices in record order, -1 where none
    prefix: list[str]  # each node's /24, the unit of the per-network reservation limit
    reservation_refusals: dict[str, int]  # reason -> refusals

    @property
    def nodes(self) -> int:
        return len(self.kind)

    @property
    def has_relay(self) -> np.ndarray:
        return self.relays[:, 0] >= 0


@dataclass
class NatReport:
    """What :func:`simulate` found; fractions are of ordered pairs (A dials B), A != B."""

    config: NatSimConfig
    seed: int
    counts: dict[str, int]
    exact: dict[str, float]  # outcome -> expected share over all ordered pairs
    by_class: dict[str, dict[str, float]]  # "A kind -> B kind" -> outcome -> share of those
    sampled: dict[str, float]  # outcome -> share of the sampled pairs
    sampled_pairs: int
    punch_success_natted: float  # both behind NAT, relay-linked: share that ends direct
    autonat: dict[str, float]
    reservations: dict[str, float]
    relay_load: dict[str, float]
    times: dict[str, float]

    @property
    def linkable(self) -> float:
        return 1.0 - self.exact["never"]

    @property
    def direct(self) -> float:
        return self.exact["direct first try"] + self.exact["direct after punching"]


# ---------------------------------------------------------------------- building the nodes


def _rng(seed: int, stage: int) -> np.random.Generator:
    """One independent stream per stage, so that changing one stage's size (more pairs) leaves
    the others' draws alone."""
    return np.random.default_rng([seed, stage])


def rtt(config: NatSimConfig, xy: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Round-trip seconds between nodes ``a`` and ``b`` (arrays of indices)."""
    return config.rtt_base + config.rtt_span * np.hypot(*(xy[a] - xy[b]).T)


def assign_kinds(config: NatSimConfig, rng: np.random.Generator) -> np.ndarray:
    """Exactly the configured shares (rounded), in a seeded random order."""
    n = config.nodes
    public = round(n * config.public)
    preserving = min(n - public, round(n * config.preserving))
    kinds = np.full(n, SYMMETRIC, dtype=np.int8)
    kinds[:public] = PUBLIC
    kinds[public : public + preserving] = PRESERVING
    return rng.permutation(kinds)


def dial_out(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The ``k`` distinct random peers each node dialled (all of them when ``k >= n - 1``)."""
    k = min(k, n - 1)
    if n <= 2048:  # exact: the k smallest of n - 1 random keys
        keys = rng.random((n, n))
        np.fill_diagonal(keys, np.inf)
        return list(np.argsort(keys, axis=1)[:, :k])
    offsets = rng.integers(1, n, size=(n, k))  # a repeat now and then is dropped
    picks = (np.arange(n)[:, None] + offsets) % n
    return [np.unique(row) for row in picks]


def autonat(
    config: NatSimConfig, kind: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """("reached" answers, answers) per node: each of up to ``autonat_peers`` helpers dials the
    node back and reports the truth, but for the configured error rates."""
    n = len(kind)
    answers = np.full(n, min(config.autonat_peers, n - 1))
    public = kind == PUBLIC
    wrong = np.where(public, config.autonat_false_fail, config.autonat_false_reach)
    draws = rng.random((n, config.autonat_peers)) < wrong[:, None]
    asked = np.arange(config.autonat_peers)[None, :] < answers[:, None]
    says_reached = np.where(public[:, None], ~draws, draws) & asked
    return says_reached.sum(axis=1), answers


def _live_verdict(reached: int, answers: int) -> bool:
    """What a live node's :class:`~qiz.qmp.observed.NatState` concludes from ``answers``
    dial-backs of which ``reached`` got through: whether it publishes its address (public or
    unknown) rather than relays (private)."""
    state = NatState()
    for i in range(answers):
        state.dialback(b"helper %d" % i, i < reached, now=0.0)
    return state.reachability != "private"


def verdict_public(rule: str, reached: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Whether each node publishes a direct address: by the live rule (``"spec"``: a vote of the
    answers, a tie to public, no answer unknown -- which also publishes), asked of the real
    ``NatState`` once per (reached, answers) combination, or by a strict majority."""
    if rule == "majority":
        return 2 * reached > answers
    table = np.zeros((answers.max(initial=0) + 1,) * 2, dtype=bool)
    for total in range(table.shape[0]):
        for got in range(total + 1):
            table[got, total] = _live_verdict(got, total)
    return table[reached, answers]


def relay_config(config: NatSimConfig) -> RelayConfig:
    """The ``[relay]`` settings every simulated relay runs with."""
    return RelayConfig(
        max_reservations=config.max_reservations,
        max_reservations_per_prefix=config.max_reservations_per_prefix,
        max_circuits=config.max_circuits,
        max_circuits_per_peer=config.max_circuits_per_peer,
        reserve_on=config.reserve_on,
    )


def reserve(
    config: NatSimConfig,
    xy: np.ndarray,
    score: np.ndarray,
    *,
    wants: np.ndarray,
    serves: np.ndarray,
    out_links: list[np.ndarray],
    prefix: list[str],
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, int]]:
    """Reservations in record order per node, and the relays' refusals by reason.

    Every relay is a real :class:`~qiz.qmp.relay.RelayCore`. Nodes reserve one after the
    other in a random order (the order they came up in). Each asks the relay-serving peers it
    dialled, best score first and nearest among equals (§3); a relay that refuses (full, or
    full for the node's /24) sends it to the next; once its own peers are exhausted, it asks
    the ``relay_search`` nearest relays it can learn of."""
    n = len(wants)
    relays = np.full((n, config.reserve_on), -1, dtype=np.int64)
    cores: dict[int, RelayCore] = {}
    settings = relay_config(config)
    refusals: dict[str, int] = {}
    servers = np.flatnonzero(serves)
    for b in rng.permutation(np.flatnonzero(wants)):
        peers = out_links[b]
        peers = peers[serves[peers]]
        near = rtt(config, xy, np.full(len(peers), b), peers)
        ordered = peers[np.lexsort((near, -score[peers]))]
        got = 0
        for pass_ in range(2):
            if pass_ == 1:  # its own peers are exhausted: ask the nearest relays it can find
                if not len(servers):
                    break
                d = rtt(config, xy, np.full(len(servers), b), servers)
                cut = min(config.relay_search, len(servers))
                near_ones = servers[np.argsort(d)[:cut]]
                tried = set(ordered.tolist())
                ordered = np.array([r for r in near_ones if r not in tried], dtype=np.int64)
            for r in ordered.tolist():
                if r not in cores:
                    cores[r] = RelayCore(settings)
                answer = cores[r].reserve(int(b), ("link", int(b)), prefix[b], 0.0)
                if isinstance(answer, Refusal):
                    refusals[answer.reason] = refusals.get(answer.reason, 0) + 1
                    continue
                relays[b, got] = r
                got += 1
                if got == config.reserve_on:
                    break
            if got == config.reserve_on:
                break
    return relays, refusals


def populate(config: NatSimConfig, seed: int, kinds: Any = None) -> Population:
    """The nodes of one run: kinds (or the given ones), NAT quirks, places, scores, AutoNAT
    verdicts, the peers each dialled, and reservations."""
    kind = np.asarray(kinds, dtype=np.int8) if kinds is not None else None
    if kind is not None and len(kind) != config.nodes:
        raise NatSimError(f"{len(kind)} kinds given for {config.nodes} nodes")
    if kind is None:
        kind = assign_kinds(config, _rng(seed, 1))
    n = config.nodes
    rng = _rng(seed, 2)
    preserve_fails = (kind == PRESERVING) & (rng.random(n) < config.preservation_fails)
    xy = rng.random((n, 2))
    # Most peers keep the initial score; the rest moved up or down with their work (0.05 steps).
    moved = rng.random(n) < config.scored
    score = np.where(moved, np.round(rng.uniform(0.4, 1.0, n) * 20) / 20, INITIAL)
    reached, answers = autonat(config, kind, _rng(seed, 3))
    publishes = verdict_public(config.autonat_rule, reached, answers)
    serves = publishes & (kind == PUBLIC)
    out_links = dial_out(n, config.links_per_node // 2, _rng(seed, 4))
    # home networks are /24s of their own, mostly: 10,000 nodes in 65,536 of them
    nets = _rng(seed, 8).integers(0, 1 << 16, n)
    prefix = [network_prefix(f"10.{x >> 8}.{x & 255}.1:7450") for x in nets.tolist()]
    relays, refusals = reserve(
        config,
        xy,
        score,
        wants=~publishes,
        serves=serves,
        out_links=out_links,
        prefix=prefix,
        rng=_rng(seed, 5),
    )
    return Population(
        kind,
        preserve_fails,
        xy,
        score,
        reached,
        answers,
        publishes,
        serves,
        out_links,
        relays,
        prefix,
        refusals,
    )


# ---------------------------------------------------------------------- pairs


def outcome(
    a_kind: np.ndarray,
    a_fails: np.ndarray,
    b_kind: np.ndarray,
    *,
    b_direct: np.ndarray,
    b_fails: np.ndarray,
    b_relayed: np.ndarray,
    punch_ok: np.ndarray,
) -> np.ndarray:
    """How A's dial to B ends (FIRST, PUNCHED, RELAYED or NEVER), vectorised over pairs.

    B publishes a direct address (it believes itself public): the dial works if B really is
    reachable, else nothing else is published and the pair never links. B publishes relays:
    without any, never; with one, a circuit, then the punch: direct if either side is public
    (one side's dial simply works), or if both NATs are port-preserving, kept the port and an
    attempt succeeded (``punch_ok``); a symmetric NAT on either side keeps it relayed."""
    first = b_direct & (b_kind == PUBLIC)
    punch = (
        (a_kind == PUBLIC)
        | (b_kind == PUBLIC)
        | ((a_kind == PRESERVING) & (b_kind == PRESERVING) & ~a_fails & ~b_fails & punch_ok)
    )
    via_relay = ~b_direct & b_relayed
    relayed = np.where(punch, PUNCHED, RELAYED)
    out = np.where(first, FIRST, np.where(via_relay, relayed, NEVER)).astype(np.int8)
    shape = np.broadcast(a_kind, a_fails, b_kind, b_direct, b_fails, b_relayed, punch_ok).shape
    return np.broadcast_to(out, shape)


def punch_success_probability(config: NatSimConfig) -> float:
    return 1.0 - config.punch_failure**config.punch_attempts


def exact_outcomes(config: NatSimConfig, pop: Population) -> np.ndarray:
    """Expected pair counts, shape (3, 3, 4): dialler kind, target kind, outcome, over all
    n (n - 1) ordered pairs, grouping nodes by everything the outcome depends on."""
    dkey = pop.kind.astype(np.int64) * 2 + pop.preserve_fails
    tkey = (
        pop.kind.astype(np.int64) * 8
        + pop.publishes_direct * 4
        + pop.preserve_fails * 2
        + pop.has_relay
    )
    pairs = np.outer(np.bincount(dkey, minlength=6), np.bincount(tkey, minlength=24)).astype(
        np.float64
    )
    # a node never dials itself
    pairs -= np.bincount(dkey * 24 + tkey, minlength=144).reshape(6, 24)
    d = np.arange(6)[:, None]
    t = np.arange(24)[None, :]
    dialler = (d // 2, (d % 2).astype(bool), t // 8)
    target = {
        "b_direct": ((t // 4) % 2).astype(bool),
        "b_fails": ((t // 2) % 2).astype(bool),
        "b_relayed": (t % 2).astype(bool),
    }
    q = punch_success_probability(config)
    counts = np.zeros((3, 3, 4))
    for ok, weight in ((True, q), (False, 1.0 - q)):
        result = outcome(*dialler, **target, punch_ok=np.array(ok))
        for o in range(4):
            mass = pairs * (result == o) * weight
            np.add.at(counts[:, :, o], (np.broadcast_to(d // 2, mass.shape), t // 8), mass)
    return counts


def punch_draws(config: NatSimConfig, rng: np.random.Generator, size: int) -> np.ndarray:
    """The attempt that succeeded (1-based) per pair, 0 when all ``punch_attempts`` failed."""
    ok = rng.random((size, config.punch_attempts)) >= config.punch_failure
    return np.where(ok.any(axis=1), ok.argmax(axis=1) + 1, 0)


def pair_outcomes(pop: Population, a: np.ndarray, b: np.ndarray, attempt: np.ndarray) -> np.ndarray:
    return outcome(
        pop.kind[a],
        pop.preserve_fails[a],
        pop.kind[b],
        b_direct=pop.publishes_direct[b],
        b_fails=pop.preserve_fails[b],
        b_relayed=pop.has_relay[b],
        punch_ok=attempt > 0,
    )


def link_times(
    config: NatSimConfig,
    pop: Population,
    a: np.ndarray,
    b: np.ndarray,
    *,
    result: np.ndarray,
    attempt: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(seconds to the first link, seconds to the first direct link; NaN where none).

    Direct: TCP connect and the QMP handshake, a round trip each. Relayed (§4.3, §5.2): a link
    to the relay (2 round trips), ``relay.connect`` and the end-to-end handshake through the
    circuit (one circuit round trip each); then ``nat.punch`` (a circuit round trip),
    ``nat.sync`` (half of one, which A also waits), the simultaneous open and the direct
    handshake (a direct round trip each), after any failed attempts' timeout and pause."""
    direct = rtt(config, pop.xy, a, b)
    relay = np.maximum(pop.relays[b, 0], 0)
    to_relay = rtt(config, pop.xy, a, relay)
    circuit = to_relay + rtt(config, pop.xy, relay, b)
    relayed_link = 2 * to_relay + 2 * circuit
    punched = (
        relayed_link
        + 1.5 * circuit
        + 2 * direct
        + (np.maximum(attempt, 1) - 1) * (PUNCH_TIMEOUT + PUNCH_PAUSE)
    )
    first = np.where(result == FIRST, 2 * direct, np.where(result == NEVER, np.nan, relayed_link))
    to_direct = np.where(result == FIRST, 2 * direct, np.where(result == PUNCHED, punched, np.nan))
    return first, to_direct


def sample_pairs(config: NatSimConfig, seed: int, n: int, size: int) -> tuple[np.ndarray, ...]:
    """``size`` random ordered pairs (A != B) and their punch draws."""
    rng = _rng(seed, 6)
    a = rng.integers(0, n, size)
    b = (a + rng.integers(1, n, size)) % n
    return a, b, punch_draws(config, rng, size)


# ---------------------------------------------------------------------- relay load


def relay_load(config: NatSimConfig, pop: Population, seed: int) -> dict[str, float]:
    """Circuits per relay-serving node when every link that cannot go direct holds one.

    The links are those the nodes dialled (``links_per_node`` / 2 each). Every relay is a real
    :class:`~qiz.qmp.relay.RelayCore` holding the population's reservations; circuits are
    opened in a random order on the target's relays in record order, and a relay admits one or
    refuses it by its own limits (``max_circuits`` in all, ``max_circuits_per_peer`` to one
    target and from one dialler); a circuit every relay refuses leaves the pair unlinked. Demand
    is what the first relays would be asked with no limits."""
    rng = _rng(seed, 7)
    a = np.concatenate([np.full(len(peers), i) for i, peers in enumerate(pop.out_links)]).astype(
        np.int64
    )
    b = np.concatenate(pop.out_links).astype(np.int64)
    result = pair_outcomes(pop, a, b, punch_draws(config, rng, len(a)))
    relayed = np.flatnonzero(result == RELAYED)
    n = pop.nodes
    settings = relay_config(config)
    cores = {int(r): RelayCore(settings) for r in np.flatnonzero(pop.serves_relay)}
    for holder, record in enumerate(pop.relays.tolist()):
        for r in record:
            if r >= 0:
                cores[r].reserve(holder, ("link", holder), pop.prefix[holder], 0.0)
    demand = np.bincount(pop.relays[b[relayed], 0], minlength=n)
    reasons: dict[str, int] = {}
    refused = 0
    for sid, e in enumerate(rng.permutation(relayed).tolist()):
        src, dst = int(a[e]), int(b[e])
        for r in pop.relays[dst].tolist():
            if r < 0:
                continue
            opened = cores[r].connect(
                src, End(("from", src), sid), dst, End(("link", dst), sid), 0.0
            )
            if not isinstance(opened, Refusal):
                break
            reasons[opened.reason] = reasons.get(opened.reason, 0) + 1
        else:  # every relay in the record refused (or it names none)
            refused += 1
    carried = np.zeros(n, dtype=np.int64)
    for r, core in cores.items():
        carried[r] = len(core.circuits)
    servers = pop.serves_relay
    load = carried[servers] if servers.any() else np.zeros(1)
    asked = demand[servers] if servers.any() else np.zeros(1)
    return {
        "links": float(len(a)),
        "links never": float((result == NEVER).sum()),
        "relayed links": float(len(relayed)),
        "relays": float(servers.sum()),
        "circuits mean": float(load.mean()),
        "circuits p99": float(np.percentile(load, 99)),
        "circuits max": float(load.max()),
        "relays at max_circuits": float((load >= config.max_circuits).sum()),
        "demand mean": float(asked.mean()),
        "demand p99": float(np.percentile(asked, 99)),
        "demand max": float(asked.max()),
        "circuits refused": float(refused),
        "refused share": refused / len(relayed) if len(relayed) else 0.0,
        # the links that exist in the end: not those to unreachable nodes, nor refused circuits
        "linked share": 1.0 - (float((result == NEVER).sum()) + refused) / len(a),
    } | {f"refusals: {reason}": float(count) for reason, count in sorted(reasons.items())}


# ---------------------------------------------------------------------- the whole run


def _shares(counts: np.ndarray) -> dict[str, float]:
    total = counts.sum()
    return {name: float(counts[o] / total) if total else 0.0 for o, name in enumerate(OUTCOMES)}


def _autonat_accuracy(config: NatSimConfig, pop: Population) -> dict[str, float]:
    truth = pop.kind == PUBLIC
    out: dict[str, float] = {}
    for rule in ("spec", "majority"):
        says = verdict_public(rule, pop.reached, pop.answers)
        out[f"{rule} accuracy"] = float((says == truth).mean())
        out[f"{rule} private nodes publishing an address"] = float((says & ~truth).sum())
        out[f"{rule} public nodes hiding behind relays"] = float((~says & truth).sum())
    return out


def simulate(config: NatSimConfig | None = None, seed: int = 1, kinds: Any = None) -> NatReport:
    """One run of the model: deterministic for a given config, seed and (optional) kinds."""
    config = config or NatSimConfig()
    pop = populate(config, seed, kinds)
    exact = exact_outcomes(config, pop)
    by_class = {
        f"{KINDS[i]} -> {KINDS[j]}": _shares(exact[i, j])
        for i in range(3)
        for j in range(3)
        if exact[i, j].sum()
    }
    natted = exact[1:, 1:].sum(axis=(0, 1))
    relay_linked = natted[PUNCHED] + natted[RELAYED]
    a, b, attempt = sample_pairs(config, seed, pop.nodes, config.pairs)
    result = pair_outcomes(pop, a, b, attempt)
    first, to_direct = link_times(config, pop, a, b, result=result, attempt=attempt)
    punched = result == PUNCHED

    def pct(x: np.ndarray, q: float) -> float:
        x = x[~np.isnan(x)]
        return float(np.percentile(x, q)) if len(x) else float("nan")

    held = np.bincount(pop.relays[pop.relays >= 0], minlength=pop.nodes)[pop.serves_relay]
    wanting = ~pop.publishes_direct
    return NatReport(
        config=config,
        seed=seed,
        counts={name: int((pop.kind == k).sum()) for k, name in enumerate(KINDS)}
        | {"port preservation failed": int(pop.preserve_fails.sum())},
        exact=_shares(exact.sum(axis=(0, 1))),
        by_class=by_class,
        sampled=_shares(np.bincount(result, minlength=4).astype(np.float64)),
        sampled_pairs=len(a),
        punch_success_natted=float(natted[PUNCHED] / relay_linked) if relay_linked else 0.0,
        autonat=_autonat_accuracy(config, pop),
        reservations={
            "nodes reserving": float(wanting.sum()),
            "nodes without a relay": float((wanting & ~pop.has_relay).sum()),
            "nodes short of reserve_on": float((wanting & (pop.relays[:, -1] < 0)).sum()),
            "refused": float(sum(pop.reservation_refusals.values())),
            "per relay mean": float(held.mean()) if len(held) else 0.0,
            "per relay p99": float(np.percentile(held, 99)) if len(held) else 0.0,
            "per relay max": float(held.max()) if len(held) else 0.0,
        }
        | {f"refused: {why}": float(k) for why, k in sorted(pop.reservation_refusals.items())},
        relay_load=relay_load(config, pop, seed),
        times={
            "first link p50": pct(first, 50),
            "first link p95": pct(first, 95),
            "direct first try p50": pct(to_direct[result == FIRST], 50),
            "direct after punching p50": pct(to_direct[punched], 50),
            "direct after punching p95": pct(to_direct[punched], 95),
        },
    )

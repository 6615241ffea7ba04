"""qiz.trust.scores: verified work and decayed misbehaviour counters make one score; thresholds,
operator overrides, the reason trail, persistence and the bound on peers tracked."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz.trust import scores as trust
from qiz.trust.scores import INITIAL, REASONS, PeerScores

PEER = b"p" * 32
OTHER = b"o" * 32
DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def fresh(db: sqlite3.Connection | None = None) -> tuple[PeerScores, Clock, sqlite3.Connection]:
    clock = Clock()
    db = db or sqlite3.connect(":memory:", isolation_level=None)
    return PeerScores(db, clock), clock, db


def test_verified_work_moves_the_score_as_before() -> None:
    scores, _, _ = fresh()
    assert scores.get(PEER) == INITIAL
    scores.agreed(PEER)
    assert scores.get(PEER) == pytest.approx(INITIAL + trust.AGREE_STEP)
    scores.disagreed(PEER)
    assert scores.get(PEER) == pytest.approx((INITIAL + trust.AGREE_STEP) / 2)
    scores.failed(PEER)
    assert scores.get(PEER) == pytest.approx((INITIAL + trust.AGREE_STEP) / 2 - trust.FAIL_STEP)
    for _ in range(10):
        scores.agreed(OTHER)
    assert scores.get(OTHER) == 1.0  # capped
    row = next(r for r in scores.table() if r["peer"] == PEER)
    assert (row["agreed"], row["disagreed"], row["failed"]) == (1, 1, 1)


def test_misbehaviour_costs_its_weight_and_is_forgotten_with_its_half_life() -> None:
    scores, clock, _ = fresh()
    scores.record(PEER, "invalid_record", "a peer record whose signature fails")
    cost = REASONS["invalid_record"].weight
    assert scores.get(PEER) == pytest.approx(INITIAL - cost)
    clock.now += REASONS["invalid_record"].half_life
    assert scores.get(PEER) == pytest.approx(INITIAL - cost / 2)
    scores.record(PEER, "invalid_record")  # the counter decayed to 0.5, now 1.5
    assert scores.get(PEER) == pytest.approx(INITIAL - 1.5 * cost)
    clock.now += 20 * DAY
    assert scores.get(PEER) == pytest.approx(INITIAL, abs=1e-5)
    # a timeout is cheap and brief
    scores.record(OTHER, "rpc_timeout")
    assert INITIAL - scores.get(OTHER) == pytest.approx(REASONS["rpc_timeout"].weight)


def test_thresholds_withdraw_work_then_routing_then_links_and_cooling_off_restores_them() -> None:
    scores, clock, _ = fresh()
    assert all(scores.may(PEER, what) for what in ("give", "route", "link"))
    lost: dict[str, int] = {}
    for event in range(1, 100):
        scores.record(PEER, "stale_record")  # uncapped: it can cross every line
        for what in ("give", "route", "link"):
            if not scores.may(PEER, what):
                lost.setdefault(what, event)
        if len(lost) == 3:
            break
    # what a peer gets goes away in order: work first, links last
    assert lost["give"] <= lost["route"] <= lost["link"], lost
    clock.now += 20 * 3600  # twenty half-lives of a stale record
    assert all(scores.may(PEER, what) for what in ("give", "route", "link"))


def test_what_a_peer_may_not_be_to_blame_for_never_cuts_it_off() -> None:
    """Timeouts (our own loop may be slow), bad shares (a holder cannot check a publisher's
    bytes), unfinished tasks: capped, so they alone never cross a line."""
    scores, _, _ = fresh()
    for reason in ("rpc_timeout", "rpc_error", "bad_share", "task_failed", "handshake_failed"):
        for _ in range(200):
            scores.record(PEER, reason)
        assert all(scores.may(PEER, what) for what in ("route", "link")), reason
    assert scores.get(PEER) == pytest.approx(INITIAL - trust.TRANSIENT_CAP)
    assert scores.may(PEER, "give")  # from INITIAL, not even the give line


def test_lost_votes_cost_work_not_links_and_the_work_score_recovers() -> None:
    scores, clock, _ = fresh()
    for _ in range(8):
        scores.disagreed(PEER)
    assert scores.get(PEER) < trust.GIVE and not scores.may(PEER, "give")
    assert scores.may(PEER, "route") and scores.may(PEER, "link")  # its routing did no wrong
    clock.now += trust.WORK_RECOVERY
    assert scores.get(PEER) == pytest.approx(INITIAL / 2, abs=0.01)  # half the way back
    clock.now += 20 * trust.WORK_RECOVERY
    assert scores.may(PEER, "give") and scores.get(PEER) == pytest.approx(INITIAL, abs=1e-4)
    scores.agreed(OTHER)  # above INITIAL nothing recovers downward
    clock.now += 10 * trust.WORK_RECOVERY
    assert scores.get(OTHER) == pytest.approx(INITIAL + trust.AGREE_STEP)


def test_operators_trust_and_ban_over_the_score_until_they_lift_it() -> None:
    scores, _, _ = fresh()
    scores.disagreed(PEER)
    scores.record(PEER, "stale_record")
    scores.override(PEER, "trusted")
    assert scores.get(PEER) == 1.0 and scores.may(PEER, "give")
    scores.override(PEER, "banned")
    assert scores.get(PEER) == 0.0
    assert not any(scores.may(PEER, w) for w in ("give", "route", "link"))
    scores.override(PEER, None)
    assert 0.0 < scores.get(PEER) < INITIAL
    trail = [e["reason"] for e in scores.explain(PEER)["trail"]]
    assert trail[:3] == ["unbanned", "banned", "trusted"]  # newest first
    with pytest.raises(ValueError, match="trusted or banned"):
        scores.override(PEER, "friend")
    with pytest.raises(KeyError):
        scores.record(PEER, "rude")


def test_everything_survives_a_restart(tmp_path) -> None:
    path = tmp_path / "scores.db"
    scores, clock, db = fresh(sqlite3.connect(path, isolation_level=None))
    scores.agreed(PEER)
    scores.record(PEER, "bad_share", "column 3 of chunk 9")
    scores.override(OTHER, "banned")
    before = (scores.get(PEER), scores.get(OTHER), scores.explain(PEER))
    db.close()
    again = PeerScores(sqlite3.connect(path, isolation_level=None), clock)
    assert (again.get(PEER), again.get(OTHER), again.explain(PEER)) == before
    assert again.explain(PEER)["reasons"]["bad_share"]["count"] == 1.0


def test_the_trend_is_the_change_since_before_the_latest_hour_with_events(tmp_path) -> None:
    """A burst of bad shares shows as a fall from the score before the burst (events within
    the hour do not move that reference); the fall shrinks as the counters decay; the next
    event after the hour starts a new reference. Survives a restart; a table from before
    trends is migrated."""
    path = tmp_path / "scores.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute(
        "CREATE TABLE trust_peers (peer BLOB PRIMARY KEY, override TEXT, "
        "seen REAL NOT NULL DEFAULT 0, worked REAL NOT NULL DEFAULT 0)"
    )
    scores, clock, db = fresh(old)

    def trend(peer: bytes) -> float:
        return next(r["trend"] for r in scores.table() if r["peer"] == peer)

    scores.agreed(PEER)  # the first event: the reference is the score before it, INITIAL
    assert trend(PEER) == pytest.approx(trust.AGREE_STEP, abs=1e-4)
    clock.now += trust.TREND_WINDOW  # an hour later: a new window
    before = scores.get(PEER)
    for _ in range(3):
        clock.now += 60
        scores.record(PEER, "bad_share", "a flipped byte")
    fall = trend(PEER)
    assert fall == pytest.approx(scores.get(PEER) - before, abs=1e-4) and fall < -0.1
    clock.now += REASONS["bad_share"].half_life  # no new event: the counters decay
    assert fall < trend(PEER) < 0
    db.close()
    scores = PeerScores(sqlite3.connect(path, isolation_level=None), clock)
    assert fall < trend(PEER) < 0  # the reference was persisted


def test_the_trail_and_the_peers_tracked_are_bounded(monkeypatch) -> None:
    scores, clock, db = fresh()
    for i in range(trust.MAX_TRAIL_PER_PEER + 10):
        clock.now += 1
        scores.record(PEER, "rpc_error", f"reply {i} " + "x" * 500)
    (kept,) = db.execute("SELECT COUNT(*) FROM trust_trail WHERE peer=?", (PEER,)).fetchone()
    assert kept == trust.MAX_TRAIL_PER_PEER
    newest = scores.explain(PEER, trail=1)["trail"][0]
    assert newest["detail"].startswith(f"reply {trust.MAX_TRAIL_PER_PEER + 9} ")
    assert len(newest["detail"]) == trust.MAX_DETAIL

    monkeypatch.setattr(trust, "MAX_TRACKED_PEERS", 5)
    monkeypatch.setattr(trust, "EVICTION_SCAN", 4)
    punished = b"x" * 32
    for _ in range(5):
        scores.record(punished, "invalid_signature")  # under every line
    scores.override(OTHER, "banned")  # an operator's word outlives the bound
    for i in range(20):
        clock.now += 1
        scores.record(bytes([i]) * 32, "rpc_timeout")
    tracked = {row["peer"] for row in scores.table()}
    assert len(tracked) == 5 and OTHER in tracked and bytes([19]) * 32 in tracked
    assert punished in tracked and not scores.may(punished, "link")  # not washed out
    assert scores.get(bytes([0]) * 32) == INITIAL  # forgotten: a stranger again
    rows = {bytes(p) for (p,) in db.execute("SELECT DISTINCT peer FROM trust_trail")}
    assert rows <= tracked


events = st.lists(
    st.tuples(
        st.sampled_from([*REASONS, "agreed", "disagreed", "failed"]),
        st.floats(0, 2 * DAY),
    ),
    max_size=40,
)


@given(events)
def test_a_score_stays_in_bounds_and_misbehaviour_never_raises_it(history) -> None:
    scores, clock, _ = fresh()
    for event, wait in history:
        clock.now += wait
        before = scores.get(PEER)
        if event in REASONS:
            scores.record(PEER, event)
            assert scores.get(PEER) <= before
        else:
            getattr(scores, event)(PEER)
        assert 0.0 <= scores.get(PEER) <= 1.0

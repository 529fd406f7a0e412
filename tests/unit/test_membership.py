"""Gossip membership decisions (DESIGN.md §4 failure detection; Dynamo §4.8; phi accrual,
Hayashibara et al. 2004; suspicion timeout, SWIM (Das et al. 2002) §4.2 and memberlist
util.go). Time and randomness are parameters; no sleeps (DESIGN.md §8.2)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_mode.membership import (
    Digest,
    Entry,
    GossipState,
    beat,
    choose_peers,
    digest,
    dissemination_rounds,
    merge,
    parse_digest,
)
from dynamo_mode.membership_status import (
    GossipConfig,
    Status,
    Thresholds,
    detection_bound,
    new_window,
    node_status,
    record_arrivals,
    silence_to_down,
    status,
    suspicion_timeout,
)
from dynamo_mode.phi import LN10, PhiWindow

CFG = GossipConfig()
T = Thresholds()
SUSPECT_02 = 5 * 0.2 * LN10  # 2.3026 s: phi 5 at a 0.2 s mean
PHI_DOWN_02 = 8 * 0.2 * LN10  # 3.6841 s: phi 8 at a 0.2 s mean
EPS = 1e-6


# Config ----------------------------------------------------------------------------------------


def test_defaults_are_valid_and_as_documented() -> None:
    assert (CFG.interval, CFG.fanout, CFG.window_size, CFG.min_samples) == (0.2, 3, 1000, 10)
    assert (T.phi_suspect, T.phi_down, T.suspicion_mult) == (5.0, 8.0, 4.0)


# (kwargs, message fragment naming field and value)
BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"interval": 0}, "interval=0"),
    ({"interval": -0.2}, "interval=-0.2"),
    ({"interval": math.inf}, "interval=inf"),
    ({"interval": "0.2"}, "interval='0.2'"),
    ({"fanout": 0}, "fanout=0"),
    ({"fanout": 2.5}, "fanout=2.5"),
    ({"fanout": True}, "fanout=True"),
    ({"window_size": 0}, "window_size=0"),
    ({"min_samples": -1}, "min_samples=-1"),
    ({"window_size": 5, "min_samples": 6}, "min_samples=6"),
    ({"thresholds": (5.0, 8.0)}, "thresholds="),
]


@pytest.mark.parametrize(("kwargs", "fragment"), BAD_CONFIGS)
def test_config_rejects(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        GossipConfig(**kwargs)


BAD_THRESHOLDS: list[tuple[dict[str, Any], str]] = [
    ({"phi_suspect": 0.0}, "phi_suspect=0.0"),
    ({"phi_down": math.nan}, "phi_down=nan"),
    ({"phi_suspect": 8.0, "phi_down": 8.0}, "phi_down=8.0"),
    ({"phi_suspect": 9.0}, "phi_down=8.0"),
    ({"suspicion_mult": -1.0}, "suspicion_mult=-1.0"),
]


@pytest.mark.parametrize(("kwargs", "fragment"), BAD_THRESHOLDS)
def test_thresholds_reject(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Thresholds(**kwargs)


# State: merge, beat, digest ------------------------------------------------------------------


def state(**versions: tuple[int, int]) -> dict[str, Entry]:
    return {node: Entry(g, h, 0.0) for node, (g, h) in versions.items()}


# (local, remote, merged digest, changed)
MERGE_CASES: list[tuple[dict[str, Entry], dict[str, tuple[int, int]], Digest, set[str]]] = [
    (state(), {}, {}, set()),
    (state(), {"a": (1, 1)}, {"a": (1, 1)}, {"a"}),
    (state(a=(1, 5)), {"a": (1, 6)}, {"a": (1, 6)}, {"a"}),
    (state(a=(1, 5)), {"a": (1, 5)}, {"a": (1, 5)}, set()),  # same version: not an arrival
    (state(a=(1, 5)), {"a": (1, 4)}, {"a": (1, 5)}, set()),  # stale gossip ignored
    (state(a=(1, 500)), {"a": (2, 1)}, {"a": (2, 1)}, {"a"}),  # restart outranks any heartbeat
    (state(a=(2, 1)), {"a": (1, 500)}, {"a": (2, 1)}, set()),
    (
        state(a=(1, 5), b=(1, 9)),
        {"b": (1, 10), "c": (3, 0)},
        {"a": (1, 5), "b": (1, 10), "c": (3, 0)},
        {"b", "c"},
    ),
]


@pytest.mark.parametrize(("local", "remote", "expected", "changed"), MERGE_CASES)
def test_merge_keeps_the_max_version(
    local: dict[str, Entry], remote: Digest, expected: Digest, changed: set[str]
) -> None:
    merged, got = merge(local, remote, 7.0)
    assert digest(merged) == expected
    assert got == changed
    assert all(merged[n].changed_at == 7.0 for n in changed)
    assert all(merged[n] == local[n] for n in set(merged) - changed)


def test_merge_does_not_mutate_its_arguments() -> None:
    local, remote = state(a=(1, 1)), {"a": (1, 2)}
    merge(local, remote, 1.0)
    assert (local, remote) == (state(a=(1, 1)), {"a": (1, 2)})


versions = st.tuples(st.integers(0, 3), st.integers(0, 5))
digests = st.dictionaries(st.sampled_from("abcd"), versions, max_size=4)


def naive_max(*ds: Digest) -> dict[str, tuple[int, int]]:
    nodes = {n for d in ds for n in d}
    return {n: max(d[n] for d in ds if n in d) for n in nodes}


def as_state(d: Digest, at: float = 0.0) -> dict[str, Entry]:
    return {n: Entry(g, h, at) for n, (g, h) in d.items()}


@settings(max_examples=200, deadline=None)
@given(digests, digests)
def test_merge_matches_a_naive_max_oracle(local: Digest, remote: Digest) -> None:
    merged, changed = merge(as_state(local), remote, 1.0)
    assert digest(merged) == naive_max(local, remote)
    assert changed == {n for n in remote if n not in local or remote[n] > local[n]}


@settings(max_examples=200, deadline=None)
@given(digests, digests, digests)
def test_merge_is_commutative_in_the_gossip_received(s: Digest, a: Digest, b: Digest) -> None:
    ab = merge(merge(as_state(s), a, 1.0)[0], b, 2.0)[0]
    ba = merge(merge(as_state(s), b, 1.0)[0], a, 2.0)[0]
    assert digest(ab) == digest(ba) == naive_max(s, a, b)


@settings(max_examples=200, deadline=None)
@given(digests, digests)
def test_merge_is_idempotent(s: Digest, a: Digest) -> None:
    once, _ = merge(as_state(s), a, 1.0)
    twice, changed = merge(once, a, 2.0)
    assert twice == once
    assert changed == frozenset()


def test_beat_increments_own_heartbeat() -> None:
    s = beat({}, "a", 7, 0.0)
    s = beat(s, "a", 7, 0.2)
    assert s["a"] == Entry(7, 2, 0.2)


def test_beat_on_a_new_generation_restarts_at_one() -> None:
    s = beat(state(a=(7, 900), b=(1, 1)), "a", 8, 5.0)
    assert s == {"a": Entry(8, 1, 5.0), "b": Entry(1, 1, 0.0)}


def test_beat_refuses_a_generation_older_than_gossiped() -> None:
    with pytest.raises(ValueError, match="generation=6"):
        beat(state(a=(7, 1)), "a", 6, 0.0)


def test_parse_digest_accepts_json_lists() -> None:
    assert parse_digest({"a": [1, 2], "b": [0, 0]}) == {"a": (1, 2), "b": (0, 0)}


BAD_DIGESTS: list[tuple[object, str]] = [
    ([["a", 1, 2]], "must be an object"),
    ({"": [1, 2]}, "non-empty string"),
    ({"a": [1]}, r"digest\['a'\]"),
    ({"a": [1, -2]}, r"digest\['a'\]"),
    ({"a": [1, True]}, r"digest\['a'\]"),
    ({"a": [1.0, 2]}, r"digest\['a'\]"),
    ({"a": "1,2"}, r"digest\['a'\]"),
    ({str(i): [0, 0] for i in range(10_001)}, "10001 entries"),
]


@pytest.mark.parametrize(("raw", "fragment"), BAD_DIGESTS)
def test_parse_digest_rejects(raw: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_digest(raw)


# Status: tables --------------------------------------------------------------------------------

# (silence, mean, n, expected) under the default config (interval 0.2 s, phi 5 / 8, mult 4)
STATUS_CASES: list[tuple[float | None, float, int, Status]] = [
    (None, 0.2, 3, "unknown"),
    (0.0, 0.2, 3, "alive"),
    (SUSPECT_02 - EPS, 0.2, 3, "alive"),
    (SUSPECT_02 + EPS, 0.2, 3, "suspect"),
    # n = 3: suspicion timeout 4 * 0.2 = 0.8 s after suspect, before phi 8 (3.68 s)
    (SUSPECT_02 + 0.8 - EPS, 0.2, 3, "suspect"),
    (SUSPECT_02 + 0.8 + EPS, 0.2, 3, "down"),
    (1e6, 0.2, 3, "down"),
    # n = 1000: timeout 4 * 3 * 0.2 = 2.4 s; phi 8 comes first
    (PHI_DOWN_02 - EPS, 0.2, 1000, "suspect"),
    (PHI_DOWN_02 + EPS, 0.2, 1000, "down"),
    # slowest admitted mean (2 rounds): suspect at 4.61 s, down 0.8 s later
    (4.60 - EPS, 0.4, 3, "alive"),
    (4.61, 0.4, 3, "suspect"),
    (5.40, 0.4, 3, "suspect"),
    (5.41, 0.4, 3, "down"),
    # fastest admitted mean (half a round): phi 8 at 1.84 s is the earliest possible down
    (1.15, 0.1, 3, "alive"),
    (1.16, 0.1, 3, "suspect"),
    (1.84, 0.1, 3, "suspect"),
    (1.85, 0.1, 3, "down"),
]


@pytest.mark.parametrize(("silence", "mean", "n", "expected"), STATUS_CASES)
def test_status(silence: float | None, mean: float, n: int, expected: Status) -> None:
    assert status(silence, mean, n, CFG) == expected


# (interval, n, mult, seconds): memberlist util.go suspicionTimeout
TIMEOUT_CASES: list[tuple[float, int, float, float]] = [
    (0.2, 0, 4.0, 0.8),
    (0.2, 1, 4.0, 0.8),
    (0.2, 3, 4.0, 0.8),  # log10 n < 1 is clamped to 1
    (0.2, 10, 4.0, 0.8),
    (0.2, 100, 4.0, 1.6),
    (0.2, 1000, 4.0, 2.4),
    (1.0, 100, 5.0, 10.0),
]


@pytest.mark.parametrize(("interval", "n", "mult", "expected"), TIMEOUT_CASES)
def test_suspicion_timeout(interval: float, n: int, mult: float, expected: float) -> None:
    assert suspicion_timeout(interval, n, mult) == pytest.approx(expected)


# (mean, interval, n, seconds)
SILENCE_TO_DOWN_CASES: list[tuple[float, float, int, float]] = [
    (0.2, 0.2, 3, SUSPECT_02 + 0.8),  # suspicion timeout first
    (0.2, 0.2, 100, PHI_DOWN_02),  # phi 8 first: 3.68 < 2.30 + 1.6
    (0.4, 0.2, 3, 2 * SUSPECT_02 + 0.8),
    (0.4, 0.2, 1000, 2 * SUSPECT_02 + 2.4),
]


@pytest.mark.parametrize(("mean", "interval", "n", "expected"), SILENCE_TO_DOWN_CASES)
def test_silence_to_down(mean: float, interval: float, n: int, expected: float) -> None:
    assert silence_to_down(mean, interval, n, T) == pytest.approx(expected)


# (n, fanout, rounds): 2 * log_{k+1} n + 1, k = min(fanout, n - 1)
ROUNDS_CASES: list[tuple[int, int, int]] = [
    (1, 3, 0),
    (2, 3, 3),
    (3, 3, 3),
    (4, 3, 3),
    (10, 3, 5),
    (100, 3, 8),
    (1000, 3, 11),
    (1000, 1, 21),
]


@pytest.mark.parametrize(("n", "fanout", "expected"), ROUNDS_CASES)
def test_dissemination_rounds(n: int, fanout: int, expected: int) -> None:
    assert dissemination_rounds(n, fanout) == expected


# (interval, fanout, n, seconds) with default thresholds; see docs/gossip.md
BOUND_CASES: list[tuple[float, int, int, float]] = [
    (0.2, 3, 3, 4 * 0.2 + 2 * SUSPECT_02 + 0.8),  # 6.21 s: the default 3-node cluster
    (0.2, 3, 10, 6 * 0.2 + 2 * SUSPECT_02 + 0.8),  # 6.61 s
    (0.2, 3, 100, 9 * 0.2 + 2 * SUSPECT_02 + 1.6),  # 8.01 s
    (0.2, 3, 1000, 12 * 0.2 + 2 * SUSPECT_02 + 2.4),  # 9.41 s
    (1.0, 3, 3, 4 * 1.0 + 10 * SUSPECT_02 + 4.0),  # 31.0 s at a Cassandra-like 1 s round
]


@pytest.mark.parametrize(("interval", "fanout", "n", "expected"), BOUND_CASES)
def test_detection_bound(interval: float, fanout: int, n: int, expected: float) -> None:
    assert detection_bound(interval, fanout, n, T) == pytest.approx(expected)


# Status: scenarios (one observer fed by gossip) ------------------------------------------------


@dataclass
class Observer:
    """Node "a" receiving digests that carry peer "b"'s versions."""

    n: int = 3
    state: GossipState = field(default_factory=dict)
    windows: dict[str, PhiWindow] = field(default_factory=dict)

    def receive(self, d: Digest, now: float) -> frozenset[str]:
        after, changed = merge(self.state, d, now)
        record_arrivals(self.windows, self.state, after, changed, now, CFG)
        self.state = after
        return changed

    def status(self, node: str, now: float) -> Status:
        return node_status(self.windows.get(node), now, self.n, CFG)


def steady(obs: Observer, generation: int, beats: int, start: float = 0.0) -> float:
    """``beats`` heartbeats of b, one per 0.2 s round; returns the last arrival time."""
    for h in range(1, beats + 1):
        obs.receive({"b": (generation, h)}, start + (h - 1) * 0.2)
    return start + (beats - 1) * 0.2


# (seconds after b's last heartbeat, status at a): b beat every 0.2 s, then crashed
SILENCE_SCENARIO: list[tuple[float, Status]] = [
    (0.0, "alive"),
    (1.0, "alive"),
    (SUSPECT_02 - 0.01, "alive"),
    (SUSPECT_02 + 0.01, "suspect"),
    (3.0, "suspect"),
    (SUSPECT_02 + 0.8 + 0.01, "down"),
    (60.0, "down"),
]


@pytest.mark.parametrize(("after", "expected"), SILENCE_SCENARIO)
def test_alive_suspect_down_as_time_passes_without_heartbeats(
    after: float, expected: Status
) -> None:
    obs = Observer()
    last = steady(obs, generation=1, beats=21)
    assert obs.windows["b"].mean() == pytest.approx(0.2)
    assert obs.status("b", last + after) == expected


def test_restart_with_a_new_generation_is_alive_on_its_first_heartbeat() -> None:
    obs = Observer()
    last = steady(obs, generation=1, beats=21)
    assert obs.status("b", last + 60) == "down"
    assert obs.receive({"b": (2, 1)}, last + 60) == {"b"}
    assert obs.status("b", last + 60) == "alive"
    fresh = obs.windows["b"]
    assert fresh.samples == 0  # new process, new window: bootstrap mean
    assert fresh.mean() == pytest.approx(0.4)


def test_a_healed_partition_is_alive_on_the_first_newer_heartbeat() -> None:
    obs = Observer()
    last = steady(obs, generation=1, beats=21)
    assert obs.status("b", last + 60) == "down"
    obs.receive({"b": (1, 300)}, last + 60)
    assert obs.status("b", last + 60) == "alive"
    assert obs.windows["b"].samples == 21  # same process: history kept, the gap capped at 0.4


def test_stale_or_repeated_gossip_is_not_a_heartbeat() -> None:
    obs = Observer()
    last = steady(obs, generation=2, beats=21)
    assert obs.receive({"b": (2, 21)}, last + 60) == frozenset()
    assert obs.receive({"b": (1, 10_000)}, last + 60) == frozenset()
    assert obs.status("b", last + 60) == "down"


def test_a_peer_never_heard_from_is_unknown_then_down_if_watched() -> None:
    wait = silence_to_down(0.4, CFG.interval, 3, T)  # judged as a bootstrap window would be
    assert node_status(None, 1e9, 3, CFG) == "unknown"
    assert node_status(new_window(CFG), 1e9, 3, CFG) == "unknown"
    assert node_status(None, 10.0 + wait - EPS, 3, CFG, watched_since=10.0) == "suspect"
    assert node_status(None, 10.0 + wait + EPS, 3, CFG, watched_since=10.0) == "down"


# Peer choice -----------------------------------------------------------------------------------

MEMBERS = [f"n{i}" for i in range(10)]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("fanout", [0, 1, 3, 9, 20])
def test_choose_peers_distinct_others_up_to_fanout(seed: int, fanout: int) -> None:
    print(f"seed={seed}")
    peers = choose_peers(random.Random(seed), MEMBERS, "n3", fanout)
    assert "n3" not in peers
    assert len(set(peers)) == len(peers) == min(fanout, 9)
    assert set(peers) <= set(MEMBERS)


@pytest.mark.parametrize("seed", range(10))
def test_choose_peers_is_deterministic_for_a_seeded_rng(seed: int) -> None:
    print(f"seed={seed}")
    first = choose_peers(random.Random(seed), MEMBERS, "n0", 3)
    again = choose_peers(random.Random(seed), list(reversed(MEMBERS)), "n0", 3)
    assert first == again
    assert first == choose_peers(random.Random(seed), set(MEMBERS), "n0", 3)


def test_choose_peers_spreads_over_all_others() -> None:
    rng = random.Random(1)
    seen = {p for _ in range(200) for p in choose_peers(rng, MEMBERS, "n0", 3)}
    assert seen == set(MEMBERS) - {"n0"}


@pytest.mark.parametrize(
    ("members", "expected"), [([], []), (["a"], []), (["a", "b"], ["b"]), (["b"], ["b"])]
)
def test_choose_peers_small_clusters(members: list[str], expected: list[str]) -> None:
    assert choose_peers(random.Random(0), members, "a", 3) == expected


def test_choose_peers_rejects_negative_fanout() -> None:
    with pytest.raises(ValueError, match="fanout=-1"):
        choose_peers(random.Random(0), MEMBERS, "n0", -1)

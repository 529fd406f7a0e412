"""Gossip failure detection: the alive/suspect/down decision, its configuration and its bound
(DESIGN.md §4 failure detection; Dynamo §4.8; design note: docs/gossip.md).

Every node keeps, per peer, the local time its version (dynamo_mode/membership.py) last
advanced and a ``PhiWindow`` of the intervals between advances (``record_arrivals``).
``status`` turns the silence since the last advance into a state:

    alive --phi >= phi_suspect--> suspect --phi >= phi_down, or suspect for the--> down
      ^                              |      SWIM suspicion timeout                  |
      +--------- any newer version (a heartbeat, or a new generation) --------------+

The suspicion timeout (SWIM, Das et al. 2002 §4.2; memberlist util.go ``suspicionTimeout``)
caps the time in suspect, and the ``PhiWindow`` mean is capped at ``max_interval``; together they
make the detection time bounded: ``detection_bound`` states it (docs/gossip.md derives it).

Pure: no I/O, clocks or global randomness; ``now``, the member count and seeds are parameters.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from dynamo_mode.membership import GossipState, dissemination_rounds, simulate_dissemination
from dynamo_mode.phi import PhiWindow, phi_of, silence_for_phi

Status = Literal["alive", "suspect", "down", "unknown"]

# PhiWindow sample bounds in gossip intervals. The cap and the bootstrap are Cassandra's
# fd_max_interval_ms = fd_initial_value_ms = 2 x gossip interval: one long gap (a partition, a
# GC pause) weighs at most two rounds, and a new peer is judged at the slowest admitted rate
# until it has history. The floor is half a round: a version advances at most once per owner
# round, so shorter gaps are bunched deliveries, not a faster peer (Akka's min-std-deviation
# plays this role for the normal fit); it keeps a live peer from being suspected before
# phi_suspect * ln10 * interval / 2 seconds of silence.
MIN_INTERVAL_ROUNDS = 0.5
MAX_INTERVAL_ROUNDS = 2.0


# Config ---------------------------------------------------------------------------------------


def _fail(field_name: str, value: object, rule: str) -> None:
    raise ValueError(f"{field_name}={value!r}: {rule}")


def _positive(field_name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0 < value < math.inf):
        _fail(field_name, value, "must be a finite number > 0")


def _int_at_least(field_name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(field_name, value, f"must be an integer >= {low}")


@dataclass(frozen=True)
class Thresholds:
    # Under the exponential model a live peer stays this silent with probability 10^-phi.
    # 10^-5 per check: a peer is suspected after ~11.5 mean gaps (2.3 s at a 0.2 s round), long
    # enough that a Python event-loop stall of a second or two does not flag healthy peers.
    phi_suspect: float = 5.0
    # Cassandra's phi_convict_threshold default: 10^-8, ~18.4 mean gaps. Only decides for large
    # clusters (n > ~50 at the mean of one round); below that the suspicion timeout fires first.
    phi_down: float = 8.0
    # memberlist DefaultLANConfig SuspicionMult: a suspect is down after
    # suspicion_mult * max(1, log10 n) rounds; log10 n because news of a live peer needs
    # O(log n) rounds to reach everyone, so large clusters need longer to hear a refutation.
    suspicion_mult: float = 4.0

    def __post_init__(self) -> None:
        _positive("phi_suspect", self.phi_suspect)
        _positive("phi_down", self.phi_down)
        _positive("suspicion_mult", self.suspicion_mult)
        if self.phi_down <= self.phi_suspect:
            _fail("phi_down", self.phi_down, f"must be > phi_suspect={self.phi_suspect!r}")


@dataclass(frozen=True)
class GossipConfig:
    # memberlist DefaultLANConfig GossipInterval (200 ms). Detection time scales linearly with it
    # (~3 s for a 3-node cluster); a round costs min(fanout, n - 1) small requests per node.
    interval: float = 0.2
    # memberlist GossipNodes: with push-pull, one update reaches 1000 nodes in ~5 rounds
    # (docs/gossip.md table); in a 3-node cluster every round reaches both peers.
    fanout: int = 3
    # phi 5 / 8 and SWIM suspicion multiplier 4; each default is justified on Thresholds.
    thresholds: Thresholds = field(default_factory=Thresholds)
    # Cassandra ArrivalWindow SAMPLE_SIZE and Akka max-sample-size: 1000 gaps is ~3 minutes of
    # history at 0.2 s, enough to forget a past incident, small enough that the per-arrival
    # fsum stays in microseconds.
    window_size: int = 1000
    # Real gaps needed before the bootstrap padding disappears: two seconds of history at
    # 0.2 s, so one early bunched or late arrival moves the mean by at most a tenth.
    min_samples: int = 10

    def __post_init__(self) -> None:
        _positive("interval", self.interval)
        _int_at_least("fanout", self.fanout, 1)
        _int_at_least("window_size", self.window_size, 1)
        _int_at_least("min_samples", self.min_samples, 0)
        if self.min_samples > self.window_size:
            _fail("min_samples", self.min_samples, f"must be <= window_size={self.window_size}")
        if not isinstance(self.thresholds, Thresholds):
            _fail("thresholds", self.thresholds, "must be a Thresholds")


def min_interval(interval: float) -> float:
    return MIN_INTERVAL_ROUNDS * interval


def max_interval(interval: float) -> float:
    return MAX_INTERVAL_ROUNDS * interval


def new_window(cfg: GossipConfig) -> PhiWindow:
    cap = max_interval(cfg.interval)
    return PhiWindow(min_interval(cfg.interval), cap, cap, cfg.window_size, cfg.min_samples)


# Detection ------------------------------------------------------------------------------------


def record_arrivals(
    windows: MutableMapping[str, PhiWindow],
    before: GossipState,
    after: GossipState,
    changed: Iterable[str],
    now: float,
    cfg: GossipConfig,
) -> None:
    """Feed ``merge``'s changed nodes to their windows (mutates ``windows``). A new generation
    is a new process: its window starts afresh (Cassandra drops the ArrivalWindow on restart),
    so the restarted node is alive from its first newer heartbeat."""
    for node in changed:
        old = before.get(node)
        window = windows.get(node)
        if window is None or old is None or old.generation != after[node].generation:
            window = windows[node] = new_window(cfg)
        window.heartbeat(now)


def suspicion_timeout(interval: float, n: int, suspicion_mult: float) -> float:
    """memberlist util.go suspicionTimeout: mult * max(1, log10 n) * interval."""
    return suspicion_mult * max(1.0, math.log10(max(1, n))) * interval


def silence_to_down(mean: float, interval: float, n: int, t: Thresholds) -> float:
    """Silence after which ``status`` says down: phi reaches phi_down, or the node has been
    suspect (phi >= phi_suspect, reached at a silence linear in ``mean``) for the suspicion
    timeout, whichever is first."""
    by_phi = silence_for_phi(t.phi_down, mean)
    by_timeout = silence_for_phi(t.phi_suspect, mean) + suspicion_timeout(
        interval, n, t.suspicion_mult
    )
    return min(by_phi, by_timeout)


def status(silence: float | None, mean: float, n: int, cfg: GossipConfig) -> Status:
    """The decision, for a peer silent ``silence`` seconds (None: never heard) whose window
    mean is ``mean``, in a cluster of ``n`` members. Monotone in ``silence``."""
    if silence is None:
        return "unknown"
    if silence >= silence_to_down(mean, cfg.interval, n, cfg.thresholds):
        return "down"
    if phi_of(silence, mean) >= cfg.thresholds.phi_suspect:
        return "suspect"
    return "alive"


def node_status(
    window: PhiWindow | None,
    now: float,
    n: int,
    cfg: GossipConfig,
    watched_since: float | None = None,
) -> Status:
    """``status`` for one peer's window. A peer never heard from is unknown; if the caller says
    since when it has been waiting for one (``watched_since``), it is down once that wait exceeds
    the silence that would have marked a peer with a bootstrap window down."""
    last = None if window is None else window.last_arrival
    if window is None or last is None:
        if watched_since is None:
            return "unknown"
        waited = max(0.0, now - watched_since)
        return status(waited, max_interval(cfg.interval), n, cfg)
    return status(window.silence(now), window.mean(), n, cfg)


def detection_bound(interval: float, fanout: int, n: int, thresholds: Thresholds) -> float:
    """Worst-case seconds from a node's crash until every other member reports it down:

        (dissemination_rounds(n, fanout) + 1) * interval
        + silence_to_down(max_interval(interval), interval, n, thresholds)

    The first term bounds, with high probability (gossip is random; tested per seed), when
    anyone last receives the dead node's final version (one extra round for unsynchronised
    round starts); no newer version can follow, so from then on each observer's silence grows,
    and ``status`` says down once it reaches ``silence_to_down`` at the largest mean a window
    admits (``max_interval``)."""
    rounds = dissemination_rounds(n, fanout) + 1
    return rounds * interval + silence_to_down(max_interval(interval), interval, n, thresholds)


# Report (python -m dynamo_mode.membership_status) ---------------------------------------------


class DisseminationRow(NamedTuple):
    n: int
    fanout: int
    seeds: int
    mean: float
    max: int
    bound: int


def measure_dissemination(
    n: int, fanout: int, seeds: Sequence[int], rounds_max: int = 100
) -> DisseminationRow:
    rounds = [simulate_dissemination(n, fanout, random.Random(s), rounds_max) for s in seeds]
    done = [r if r is not None else rounds_max + 1 for r in rounds]
    bound = dissemination_rounds(n, fanout)
    return DisseminationRow(n, fanout, len(seeds), statistics.fmean(done), max(done), bound)


def report(cfg: GossipConfig, sizes: Sequence[int], seeds: Sequence[int]) -> str:
    lines = [
        f"push-pull dissemination, fanout {cfg.fanout}, seeds {seeds[0]}..{seeds[-1]}",
        "| n | seeds | mean rounds | max rounds | log_(k+1) n | stated bound |",
        "|---|---|---|---|---|---|",
    ]
    for n in sizes:
        row = measure_dissemination(n, cfg.fanout, seeds)
        log_n = math.log(n) / math.log(min(cfg.fanout, n - 1) + 1)
        lines.append(
            f"| {n} | {row.seeds} | {row.mean:.2f} | {row.max} | {log_n:.2f} | {row.bound} |"
        )
    lines += ["", f"detection, interval {cfg.interval} s, {cfg.thresholds}", *_bounds(cfg)]
    return "\n".join(lines)


def _bounds(cfg: GossipConfig) -> list[str]:
    lines = [
        "| n | earliest down, s of silence | down at a 1-round mean, s of silence "
        "| worst case, s from crash |",
        "|---|---|---|---|",
    ]
    for n in (3, 10, 100, 1000):
        floor = silence_to_down(min_interval(cfg.interval), cfg.interval, n, cfg.thresholds)
        typical = silence_to_down(cfg.interval, cfg.interval, n, cfg.thresholds)
        worst = detection_bound(cfg.interval, cfg.fanout, n, cfg.thresholds)
        lines.append(f"| {n} | {floor:.2f} | {typical:.2f} | {worst:.2f} |")
    return lines


if __name__ == "__main__":
    print(report(GossipConfig(), (3, 10, 100, 1000), range(100)))

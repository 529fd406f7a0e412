"""Phi-accrual failure detection (Hayashibara, Défago, Yared, Katayama, "The φ Accrual Failure
Detector", 2004), in Cassandra's exponential variant (gms/FailureDetector.java, ArrivalWindow).

A detector does not answer "dead?" but how surprised it is by the silence ``t`` since the last
heartbeat: ``phi(t) = -log10 P(silence >= t | the node is alive)``. Hayashibara fits a normal
distribution to the inter-arrival times; we model them, as Cassandra does, as exponential with
the window mean ``mu``, so

    P(silence >= t) = exp(-t / mu)        phi(t) = t / (mu * ln 10)

Why exponential: heartbeats arrive through gossip, not directly, so arrivals bunch and skip
versions and a normal fit's variance is unstable (it collapses to ~0 on a quiet LAN and phi then
explodes after one late round). The exponential needs only the mean and makes phi linear in
``t``, so the silence that reaches a threshold has a closed form (``silence_for_phi``), which the
detection bound in ``dynamo_mode.membership`` is built on.

Invariants kept by ``PhiWindow``:
- every sample lies in ``[min_interval, max_interval]`` (Cassandra caps samples at
  ``fd_max_interval_ms``; the floor is our analogue of Akka's ``min-std-deviation``), so the mean
  does too and the time to any phi is bounded above and below;
- until ``min_samples`` real samples exist, the mean is padded with ``bootstrap_interval``
  pseudo-samples (Cassandra seeds the window with ``fd_initial_value_ms``), so the first
  arrivals cannot produce an absurd phi;
- at most ``max_samples`` samples are kept, oldest dropped first.

Pure: no clocks; ``now`` is a parameter. ``PhiWindow`` is a mutable accumulator, like the quorum
tallies in ``dynamo_mode.quorum``.
"""

from __future__ import annotations

import math
from collections import deque

LN10 = math.log(10.0)


def phi_of(silence: float, mean: float) -> float:
    """-log10 of P(an exponential inter-arrival with this mean exceeds ``silence``)."""
    return max(0.0, silence) / (mean * LN10)


def silence_for_phi(phi: float, mean: float) -> float:
    """The silence at which ``phi_of`` reaches ``phi``: its inverse in ``silence``."""
    return phi * mean * LN10


def clamp_sample(interval: float, min_interval: float, max_interval: float) -> float:
    """One long gap (a partition, a pause) counts as ``max_interval``, a bunched one as
    ``min_interval``: each sample's influence on the mean is bounded."""
    return min(max(interval, min_interval), max_interval)


def padded_mean(total: float, count: int, bootstrap: float, min_samples: int) -> float:
    """Mean of ``count`` samples summing to ``total``, padded with ``bootstrap`` up to
    ``min_samples`` values; with no samples it is ``bootstrap``."""
    pad = max(0, min_samples - count)
    return bootstrap if count + pad == 0 else (total + pad * bootstrap) / (count + pad)


def _require(ok: bool, field: str, value: object, rule: str) -> None:
    if not ok:
        raise ValueError(f"{field}={value!r}: {rule}")


def _check_window(
    min_interval: float,
    max_interval: float,
    bootstrap_interval: float,
    max_samples: int,
    min_samples: int,
) -> None:
    _require(0 < min_interval < math.inf, "min_interval", min_interval, "must be finite and > 0")
    _require(
        min_interval <= max_interval < math.inf,
        "max_interval",
        max_interval,
        f"must be finite and >= min_interval={min_interval!r}",
    )
    _require(
        min_interval <= bootstrap_interval <= max_interval,
        "bootstrap_interval",
        bootstrap_interval,
        f"must lie in [min_interval, max_interval]=[{min_interval!r}, {max_interval!r}]",
    )
    _require(max_samples >= 1, "max_samples", max_samples, "must be >= 1")
    _require(
        0 <= min_samples <= max_samples,
        "min_samples",
        min_samples,
        f"must lie in [0, max_samples={max_samples}]",
    )


class PhiWindow:
    """Inter-arrival times of one peer's heartbeats, as seen by this node."""

    def __init__(
        self,
        min_interval: float,
        max_interval: float,
        bootstrap_interval: float,
        max_samples: int = 1000,
        min_samples: int = 10,
    ) -> None:
        _check_window(min_interval, max_interval, bootstrap_interval, max_samples, min_samples)
        self._min = min_interval
        self._max = max_interval
        self._bootstrap = bootstrap_interval
        self._min_samples = min_samples
        self._samples: deque[float] = deque(maxlen=max_samples)
        self._last: float | None = None
        self._mean = bootstrap_interval

    @property
    def last_arrival(self) -> float | None:
        """Local time of the latest heartbeat, None before the first."""
        return self._last

    @property
    def samples(self) -> int:
        return len(self._samples)

    def mean(self) -> float:
        """Always within [min_interval, max_interval]."""
        return self._mean

    def heartbeat(self, now: float) -> None:
        """Record an arrival. ``last_arrival`` never moves backwards, so a caller clock that
        steps back yields a ``min_interval`` sample rather than a negative one."""
        if self._last is not None:
            self._samples.append(clamp_sample(now - self._last, self._min, self._max))
            # fsum over <= max_samples values once per arrival keeps the mean exact; phi() is O(1).
            total = math.fsum(self._samples)
            self._mean = padded_mean(total, len(self._samples), self._bootstrap, self._min_samples)
        self._last = now if self._last is None else max(self._last, now)

    def silence(self, now: float) -> float | None:
        """Seconds since the latest heartbeat (>= 0), None before the first."""
        return None if self._last is None else max(0.0, now - self._last)

    def phi(self, now: float) -> float:
        """0.0 before the first heartbeat: no evidence, no suspicion (``unknown`` upstream)."""
        silence = self.silence(now)
        return 0.0 if silence is None else phi_of(silence, self._mean)

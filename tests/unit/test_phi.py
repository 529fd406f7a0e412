"""Phi-accrual maths (Hayashibara et al. 2004) in Cassandra's exponential variant: phi(t) =
t / (mean * ln 10), i.e. -log10 P(an exponential gap with this mean exceeds t). Time is a
parameter; no clocks (DESIGN.md §8.2)."""

from __future__ import annotations

import math

import pytest

from dynamo_mode.phi import (
    LN10,
    PhiWindow,
    clamp_sample,
    padded_mean,
    phi_of,
    silence_for_phi,
)

# (silence, mean, phi)
PHI_CASES: list[tuple[float, float, float]] = [
    (0.0, 1.0, 0.0),
    (-3.0, 1.0, 0.0),  # a caller clock behind the last arrival is no silence
    (1.0, 1.0, 1 / LN10),  # e^-1 = 10^-0.434
    (LN10, 1.0, 1.0),  # P = 1/10
    (5 * LN10, 1.0, 5.0),  # P = 10^-5
    (8 * LN10 * 0.2, 0.2, 8.0),  # 3.68 s at a 0.2 s mean: Cassandra's convict threshold
    (1.0, 0.1, 10 / LN10),
    (1.0, 0.4, 2.5 / LN10),  # a slower peer is less surprising for the same silence
]


@pytest.mark.parametrize(("silence", "mean", "expected"), PHI_CASES)
def test_phi_of(silence: float, mean: float, expected: float) -> None:
    assert phi_of(silence, mean) == pytest.approx(expected)


@pytest.mark.parametrize(("silence", "mean", "expected"), PHI_CASES)
def test_phi_is_minus_log10_of_the_exponential_tail(
    silence: float, mean: float, expected: float
) -> None:
    tail = math.exp(-max(0.0, silence) / mean)
    assert phi_of(silence, mean) == pytest.approx(-math.log10(tail))


# (phi, mean, silence)
SILENCE_CASES: list[tuple[float, float, float]] = [
    (0.0, 0.2, 0.0),
    (1.0, 1.0, LN10),
    (5.0, 0.2, 2.302585),
    (8.0, 0.2, 3.684136),
    (5.0, 0.4, 4.605170),
    (8.0, 0.1, 1.842068),
]


@pytest.mark.parametrize(("phi", "mean", "expected"), SILENCE_CASES)
def test_silence_for_phi_inverts_phi_of(phi: float, mean: float, expected: float) -> None:
    silence = silence_for_phi(phi, mean)
    assert silence == pytest.approx(expected, abs=1e-6)
    assert phi_of(silence, mean) == pytest.approx(phi)


# (interval, min, max, sample)
CLAMP_CASES: list[tuple[float, float, float, float]] = [
    (0.2, 0.1, 0.4, 0.2),
    (0.0, 0.1, 0.4, 0.1),  # bunched deliveries
    (-1.0, 0.1, 0.4, 0.1),  # a clock stepping back
    (60.0, 0.1, 0.4, 0.4),  # a partition weighs one capped sample
    (0.1, 0.1, 0.4, 0.1),
    (0.4, 0.1, 0.4, 0.4),
]


@pytest.mark.parametrize(("interval", "low", "high", "expected"), CLAMP_CASES)
def test_clamp_sample(interval: float, low: float, high: float, expected: float) -> None:
    assert clamp_sample(interval, low, high) == expected


# (total, count, bootstrap, min_samples, mean)
MEAN_CASES: list[tuple[float, int, float, int, float]] = [
    (0.0, 0, 0.4, 10, 0.4),  # no samples: the bootstrap
    (0.0, 0, 0.4, 0, 0.4),
    (0.2, 1, 0.4, 10, (0.2 + 9 * 0.4) / 10),  # one real gap weighs a tenth
    (1.0, 5, 0.4, 10, (1.0 + 5 * 0.4) / 10),
    (2.0, 10, 0.4, 10, 0.2),  # min_samples reached: padding gone
    (3.0, 20, 0.4, 10, 0.15),
    (0.5, 1, 0.4, 0, 0.5),
]


@pytest.mark.parametrize(("total", "count", "bootstrap", "min_samples", "expected"), MEAN_CASES)
def test_padded_mean(
    total: float, count: int, bootstrap: float, min_samples: int, expected: float
) -> None:
    assert padded_mean(total, count, bootstrap, min_samples) == pytest.approx(expected)


def window(max_samples: int = 1000, min_samples: int = 10) -> PhiWindow:
    return PhiWindow(0.1, 0.4, 0.4, max_samples, min_samples)


def fed(arrivals: list[float], **kw: int) -> PhiWindow:
    w = window(**kw)
    for t in arrivals:
        w.heartbeat(t)
    return w


def every(step: float, count: int, start: float = 0.0) -> list[float]:
    return [start + i * step for i in range(count)]


# (arrivals, now, mean, phi): window with min 0.1, max 0.4, bootstrap 0.4, min_samples 10
WINDOW_CASES: list[tuple[str, list[float], float, float, float]] = [
    ("no heartbeat: no evidence", [], 100.0, 0.4, 0.0),
    ("first heartbeat: bootstrap mean", [0.0], 0.4 * LN10, 0.4, 1.0),
    ("at the arrival phi is 0", [0.0, 0.2], 0.2, (0.2 + 9 * 0.4) / 10, 0.0),
    ("steady 0.2 s, 10 gaps", every(0.2, 11), 2.0 + 5 * 0.2 * LN10, 0.2, 5.0),
    ("steady 0.2 s, 10 gaps, phi 8", every(0.2, 11), 2.0 + 8 * 0.2 * LN10, 0.2, 8.0),
    ("bunched arrivals floor at 0.1", [0.0] * 11, 0.1 * LN10, 0.1, 1.0),
    ("a long gap weighs 0.4", [*every(0.2, 10), 61.8], 61.8, (9 * 0.2 + 0.4) / 10, 0.0),
    ("slow peer caps at 0.4", every(5.0, 11), 50.0 + 0.4 * LN10, 0.4, 1.0),
    ("clock behind last arrival", every(0.2, 11), 1.0, 0.2, 0.0),
]


@pytest.mark.parametrize(
    ("name", "arrivals", "now", "mean", "phi"), WINDOW_CASES, ids=[c[0] for c in WINDOW_CASES]
)
def test_window_phi(name: str, arrivals: list[float], now: float, mean: float, phi: float) -> None:
    w = fed(arrivals)
    assert w.mean() == pytest.approx(mean)
    assert w.phi(now) == pytest.approx(phi)


def test_phi_grows_linearly_with_silence_between_heartbeats() -> None:
    w = fed(every(0.2, 11))
    phis = [w.phi(2.0 + k * 0.5) for k in range(6)]
    steps = [b - a for a, b in zip(phis, phis[1:], strict=False)]
    assert steps == pytest.approx([0.5 / (0.2 * LN10)] * 5)


def test_a_heartbeat_resets_phi_to_zero() -> None:
    w = fed(every(0.2, 11))
    assert w.phi(10.0) > 8
    w.heartbeat(10.0)
    assert w.phi(10.0) == 0.0


def test_silence_and_last_arrival() -> None:
    w = window()
    assert (w.last_arrival, w.silence(5.0), w.samples) == (None, None, 0)
    w.heartbeat(1.0)
    w.heartbeat(1.5)
    assert (w.last_arrival, w.silence(2.0), w.silence(0.0), w.samples) == (1.5, 0.5, 0.0, 1)


def test_last_arrival_never_moves_backwards() -> None:
    w = fed([5.0, 4.0])
    assert w.last_arrival == 5.0
    assert w.samples == 1
    assert w.mean() == pytest.approx((0.1 + 9 * 0.4) / 10)


def test_window_keeps_the_newest_max_samples() -> None:
    w = fed([*every(0.4, 4), *every(0.1, 3, start=1.3)], max_samples=3, min_samples=0)
    assert w.samples == 3
    assert w.mean() == pytest.approx(0.1)


def test_mean_stays_within_bounds_after_a_partition() -> None:
    w = fed([*every(0.2, 20), 500.0, 500.2])
    assert 0.1 <= w.mean() <= 0.4
    assert w.mean() == pytest.approx((19 * 0.2 + 0.4 + 0.2) / 21)


# (kwargs, message fragment)
BAD_WINDOWS: list[tuple[dict[str, float], str]] = [
    ({"min_interval": 0.0}, "min_interval=0.0"),
    ({"min_interval": math.nan}, "min_interval=nan"),
    ({"max_interval": 0.05}, "max_interval=0.05"),
    ({"max_interval": math.inf}, "max_interval=inf"),
    ({"bootstrap_interval": 0.5}, "bootstrap_interval=0.5"),
    ({"bootstrap_interval": 0.05}, "bootstrap_interval=0.05"),
    ({"max_samples": 0}, "max_samples=0"),
    ({"min_samples": -1}, "min_samples=-1"),
    ({"min_samples": 1001}, "min_samples=1001"),
]


@pytest.mark.parametrize(("override", "fragment"), BAD_WINDOWS)
def test_window_rejects_bad_arguments(override: dict[str, float], fragment: str) -> None:
    args: dict[str, float] = {
        "min_interval": 0.1,
        "max_interval": 0.4,
        "bootstrap_interval": 0.4,
        "max_samples": 1000,
        "min_samples": 10,
    }
    args.update(override)
    with pytest.raises(ValueError, match=fragment):
        PhiWindow(
            args["min_interval"],
            args["max_interval"],
            args["bootstrap_interval"],
            int(args["max_samples"]),
            int(args["min_samples"]),
        )

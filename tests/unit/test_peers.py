"""Peer liveness decision `status_of` (DESIGN.md §4 failure detection; memberlist-style: a
peer is alive while its last successful probe is within `down_after`, unknown until the
first probe has had `down_after` to answer, down afterwards). Time is a parameter (§8.2)."""

from __future__ import annotations

import pytest

from kv.peers import Status, status_of

DOWN_AFTER = 2.0

# (last_ok, first_probe, now, expected) with down_after = 2.0; boundaries are inclusive.
CASES: list[tuple[float | None, float | None, float, Status]] = [
    # never probed
    (None, None, 0.0, "unknown"),
    (None, None, 1e9, "unknown"),
    # probed, never answered: unknown for down_after, then down
    (None, 10.0, 10.0, "unknown"),
    (None, 10.0, 12.0, "unknown"),
    (None, 10.0, 12.001, "down"),
    (None, 10.0, 100.0, "down"),
    # answered: alive for down_after after the last answer, then down
    (10.0, 10.0, 10.0, "alive"),
    (10.0, 9.0, 12.0, "alive"),
    (10.0, 9.0, 12.001, "down"),
    (10.0, None, 12.001, "down"),
    (10.0, 0.0, 1000.0, "down"),
    # a fresh answer brings a down peer back
    (99.5, 0.0, 100.0, "alive"),
    # last_ok decides once there is one; first_probe only matters before
    (10.0, 11.5, 12.0, "alive"),
]


@pytest.mark.parametrize(("last_ok", "first_probe", "now", "expected"), CASES)
def test_status_of(
    last_ok: float | None, first_probe: float | None, now: float, expected: Status
) -> None:
    assert status_of(last_ok, first_probe, now, DOWN_AFTER) == expected


@pytest.mark.parametrize("down_after", [0.0, 0.5, 5.0])
def test_status_of_scales_with_down_after(down_after: float) -> None:
    assert status_of(100.0, 90.0, 100.0 + down_after, down_after) == "alive"
    assert status_of(100.0, 90.0, 100.0 + down_after + 0.01, down_after) == "down"
    assert status_of(None, 100.0, 100.0 + down_after, down_after) == "unknown"
    assert status_of(None, 100.0, 100.0 + down_after + 0.01, down_after) == "down"

"""The connection count of the HTTP listener (kv/server_limits.py `ConnectionGate`)."""

from __future__ import annotations

import pytest

from kv.server_limits import ConnectionGate


def test_connections_over_the_cap_are_refused_until_one_is_released() -> None:
    gate = ConnectionGate(max_connections=2)
    assert gate.admit("a") and gate.admit("b")
    assert not gate.admit("c") and gate.refused == 1 and gate.open == 2
    gate.release("a")
    assert gate.admit("c") and gate.open == 2


def test_one_source_cannot_take_more_than_its_share() -> None:
    gate = ConnectionGate(max_connections=10, max_per_source=2)
    assert gate.admit("a") and gate.admit("a")
    assert not gate.admit("a")
    assert gate.admit("b")
    gate.release("a")
    assert gate.admit("a") and gate.open == 3


def test_no_per_source_limit_when_it_is_zero() -> None:
    gate = ConnectionGate(max_connections=3, max_per_source=0)
    assert all(gate.admit("a") for _ in range(3)) and not gate.admit("a")


def test_a_release_without_an_admit_is_a_bug() -> None:
    gate = ConnectionGate(max_connections=1)
    with pytest.raises(ValueError):
        gate.release("a")
    assert gate.stats() == {"open": 0, "refused": 0, "header_timeouts": 0}

"""The test tier's port allocator (tests/ports.py): disjoint slices per xdist worker, below
the ephemeral range, and never the same port twice in one process."""

from __future__ import annotations

from tests.ports import HIGH, LOW, free_port, worker_slice


def test_workers_get_disjoint_slices_below_the_ephemeral_range() -> None:
    slices = [set(worker_slice(f"gw{i}", "3")) for i in range(3)]
    assert all(slices) and not (slices[0] & slices[1] or slices[1] & slices[2])
    assert all(LOW <= p < HIGH < 32768 for s in slices for p in s)
    assert worker_slice(None, None) == range(LOW, HIGH)  # outside xdist: the whole range


def test_a_process_never_hands_out_a_port_twice() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)

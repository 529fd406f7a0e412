"""ops/bench.py's split of a phase over its load processes (`split_load`): the shares the
forked processes run are the ones `parse_args` checks --keys against, so the two cannot
drift (docs/benchmarks.md, session 11: two workers with one key in flight pile up
siblings)."""

from __future__ import annotations

import pytest

from ops.bench import parse_args, split_load


def test_workers_and_keys_are_dealt_to_disjoint_shares() -> None:
    keys = [f"k{i}" for i in range(10)]
    parts = split_load(5, keys, 2)
    assert [p.workers for p in parts] == [[0, 2, 4], [1, 3]]
    assert [p.keys for p in parts] == [keys[0::2], keys[1::2]]
    assert len(split_load(3, keys, 8)) == 3  # at most one process per client


@pytest.mark.parametrize(
    ("keys", "clients", "procs", "ok"),
    [(3, 3, 1, True), (2, 3, 1, False), (4, 4, 2, True), (3, 4, 2, False), (5, 3, 2, True)],
)
def test_keys_too_few_for_a_share_are_refused(
    keys: int, clients: int, procs: int, ok: bool
) -> None:
    """Each share's keys against its own workers: 3 keys for 4 clients in 2 processes
    leaves the second process 2 workers and 1 key."""
    argv = ["--keys", str(keys), "--clients", str(clients), "--procs", str(procs)]
    if ok:
        assert parse_args(argv).keys == keys
    else:
        with pytest.raises(SystemExit):
            parse_args(argv)

"""dynamo_mode.gossip.next_generation: grows across restarts and across a wiped data dir."""

from __future__ import annotations

from pathlib import Path

from dynamo_mode.gossip import next_generation


def test_it_grows_on_every_start_even_with_a_clock_behind(tmp_path: Path) -> None:
    path = str(tmp_path / "generation")
    first = next_generation(path, 1_000.0)
    assert first == 1_000
    assert next_generation(path, 5.0) == 1_001  # the clock went back: still grows
    assert next_generation(path, 2_000.0) == 2_000


def test_a_wiped_node_starts_above_what_its_peers_remember(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    old = next_generation(str(tmp_path / "old" / "generation"), 1_700_000_000.0)
    wiped = next_generation(str(tmp_path / "generation"), 1_700_000_060.0)  # fresh dir
    assert wiped > old

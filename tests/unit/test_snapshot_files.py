"""The snapshot file is absent or a whole snapshot, never a marker
(raft_groups/syncobj_adapter/snapshot.py): a marker left by an older release killed while
writing its first snapshot was sent to members that needed a snapshot, which refused it
for ever."""

from __future__ import annotations

import json
from pathlib import Path

from raft_groups.syncobj_adapter.snapshot import _leave_placeholder, drop_marker


def test_without_a_snapshot_nothing_is_left_for_pysyncobj_to_rename(tmp_path: Path) -> None:
    final, tmp = tmp_path / "raft.snapshot", tmp_path / "raft.snapshot.tmp"
    _leave_placeholder(str(tmp), str(final))
    assert not tmp.exists() and not final.exists()


def test_with_a_snapshot_the_placeholder_is_that_snapshot(tmp_path: Path) -> None:
    final, tmp = tmp_path / "raft.snapshot", tmp_path / "raft.snapshot.tmp"
    final.write_bytes(b'{"last": []}\nstate')
    _leave_placeholder(str(tmp), str(final))
    assert tmp.read_bytes() == final.read_bytes() and tmp.stat().st_ino == final.stat().st_ino


def test_a_marker_found_at_start_is_deleted_and_a_snapshot_kept(tmp_path: Path) -> None:
    marker, real = tmp_path / "a.snapshot", tmp_path / "b.snapshot"
    marker.write_bytes(json.dumps({"incomplete": True}).encode() + b"\n")
    real.write_bytes(b'{"last": ["", 5, 1], "prev": ["", 4, 1], "cluster": []}\nchunk')
    assert drop_marker(str(marker)) is True and not marker.exists()
    assert drop_marker(str(real)) is False and real.exists()
    assert drop_marker(str(tmp_path / "absent")) is False

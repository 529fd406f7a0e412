"""The snapshot file is absent or a whole snapshot, never a marker
(raft_groups/syncobj_adapter/snapshot.py): a marker left by an older release killed while
writing its first snapshot was sent to members that needed a snapshot, which refused it
for ever. And the snapshot file's last index never goes down through our renames (issue 11
item 8)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from pysyncobj import SERIALIZER_STATE

from raft_groups.syncobj_adapter.snapshot import (
    BackgroundSnapshot,
    _leave_placeholder,
    drop_marker,
    read_last_index,
)


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


class _HeldMachine:
    """A machine whose snapshot stream waits for `go`: the background writer is mid-file."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def snapshot(self) -> Iterator[bytes]:
        def chunks() -> Iterator[bytes]:
            assert self.go.wait(timeout=30), "the test never let the writer finish"
            yield b"our state"

        return chunks()

    def restore(self, chunks: Iterator[bytes]) -> None:
        raise AssertionError("not restored here")


def _entry(index: int) -> tuple[bytes, int, int]:
    return (b"", index, 1)


def _snapshot_file(path: Path, index: int) -> None:
    header = {"last": ["", index, 1], "prev": ["", index - 1, 1], "cluster": []}
    path.write_bytes(json.dumps(header).encode() + b"\nstate")


def test_the_background_writer_never_replaces_a_newer_snapshot(tmp_path: Path) -> None:
    """While our snapshot of index 5 was being written, pysyncobj installed one of index 9
    received from the leader (and cleared its journal up to 9): ours must not replace it."""
    final = tmp_path / "raft.snapshot"
    _snapshot_file(final, 3)
    machine = _HeldMachine()
    snapshots = BackgroundSnapshot(machine)
    snapshots.write(f"{final}.tmp", (_entry(5), _entry(4), []))
    os.replace(final.with_suffix(".snapshot.tmp"), final)  # pysyncobj's placeholder rename
    _snapshot_file(tmp_path / "received", 9)
    os.replace(tmp_path / "received", final)  # pysyncobj installing the leader's snapshot
    machine.go.set()
    snapshots.join()
    assert snapshots.check() == SERIALIZER_STATE.SUCCESS  # a snapshot covering 5 is there
    assert read_last_index(str(final)) == 9
    assert not (tmp_path / "raft.snapshot.bg").exists()


def test_the_background_writer_replaces_an_older_snapshot_or_none(tmp_path: Path) -> None:
    for start in (None, 3):
        final = tmp_path / f"{start}.snapshot"
        if start is not None:
            _snapshot_file(final, start)
        machine = _HeldMachine()
        machine.go.set()
        snapshots = BackgroundSnapshot(machine)
        snapshots.write(f"{final}.tmp", (_entry(5), _entry(4), []))
        snapshots.join()
        assert read_last_index(str(final)) == start  # installed by `check`, not before
        assert snapshots.check() == SERIALIZER_STATE.SUCCESS
        assert read_last_index(str(final)) == 5
        assert final.read_bytes().endswith(b"\nour state")

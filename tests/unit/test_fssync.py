"""raft_groups/syncobj_adapter/fssync.py on real files: one syncfs for fds on one
filesystem, nothing (False) for fds on two devices."""

from __future__ import annotations

import os
from pathlib import Path

from raft_groups.syncobj_adapter.fssync import sync_filesystem


def test_fds_on_one_filesystem_are_synced_by_one_call(tmp_path: Path) -> None:
    fds = [os.open(tmp_path / f"j{i}", os.O_RDWR | os.O_CREAT) for i in range(3)]
    try:
        for fd in fds:
            os.write(fd, b"entry")
        assert sync_filesystem(fds) is True
    finally:
        for fd in fds:
            os.close(fd)


def test_fds_on_two_devices_are_left_to_their_own_syncs(tmp_path: Path) -> None:
    here = os.open(tmp_path / "j", os.O_RDWR | os.O_CREAT)
    elsewhere = os.open("/dev/null", os.O_RDONLY)  # devtmpfs, not the test directory's fs
    try:
        if os.fstat(here).st_dev != os.fstat(elsewhere).st_dev:
            assert sync_filesystem([here, elsewhere]) is False
        assert sync_filesystem([]) is False
    finally:
        os.close(here)
        os.close(elsewhere)

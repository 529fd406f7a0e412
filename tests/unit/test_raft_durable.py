"""The journal's sync (raft_groups/syncobj_adapter/durable.py; docs/raft.md "Durability"),
checked with recording wrappers around `os`."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from raft_groups.syncobj_adapter import GroupSettings, RaftDriver, RaftGroup, RaftMux
from raft_groups.syncobj_adapter.settings import RaftNodeSettings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ADDRESS = f"127.0.0.1:{_free_port()}"


def test_the_journal_is_synced_with_fdatasync_on_its_file_only_after_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group, driver = _lone_group(tmp_path)
    events: list[str] = []
    _record(monkeypatch, events)
    try:
        assert group.sync_journal()
        assert events == [f"fdatasync {tmp_path / 'raft.journal'}"]
        assert not group.sync_journal() and len(events) == 1
    finally:
        driver.stop()


def _lone_group(data: Path) -> tuple[RaftGroup, RaftDriver]:
    driver = RaftDriver(RaftMux(RaftNodeSettings(ADDRESS, ADDRESS, "s" * 32)))
    settings = GroupSettings(
        gid="g",
        self_address=ADDRESS,
        peers=(),
        data_dir=str(data),
        election_timeout_min=0.01,
        election_timeout_max=0.02,
        append_entries_period=0.001,
    )
    return RaftGroup(driver, settings, _NullMachine()), driver


def _record(monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
    """Record fdatasync, fsync (by path) and replace calls, then make them."""
    fdatasync, fsync, replace = os.fdatasync, os.fsync, os.replace

    def path(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def on_fdatasync(fd: int) -> None:
        events.append(f"fdatasync {path(fd)}")
        fdatasync(fd)

    def on_fsync(fd: int) -> None:
        events.append(f"fsync {path(fd)}")
        fsync(fd)

    def on_replace(src: str, dst: str) -> None:
        events.append(f"replace {src} {dst}")
        replace(src, dst)

    monkeypatch.setattr(os, "fdatasync", on_fdatasync)
    monkeypatch.setattr(os, "fsync", on_fsync)
    monkeypatch.setattr(os, "replace", on_replace)


class _NullMachine:
    def apply(self, index: int, command: bytes) -> None:
        return None

    def snapshot(self) -> Any:
        return iter([b""])

    def restore(self, chunks: Any) -> None:
        return None

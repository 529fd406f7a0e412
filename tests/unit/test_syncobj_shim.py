"""The pysyncobj shim's import-time check (raft_groups/syncobj_adapter/shim.py).

The check passes on the installed, pinned pysyncobj; on fake classes and modules it names
the version and every missing internal. The accessors are exercised once on a real,
unstarted group (no socket is bound: the mux binds only when the driver ticks it).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import types
from pathlib import Path
from typing import Any

import pytest

from raft_groups.syncobj_adapter import (
    GroupSettings,
    NodeLog,
    RaftDriver,
    RaftGroup,
    RaftMux,
    RaftNodeSettings,
    shim,
)
from tests.unit.raft_fakes import NullMachine

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_pysyncobj_passes_the_check() -> None:
    version = importlib.metadata.version("pysyncobj")
    assert version == shim.PINNED_VERSION
    shim.check(version, shim.NEEDS)


def test_the_pinned_version_is_the_one_pyproject_installs() -> None:
    pin = re.search(r'"pysyncobj==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin is not None and pin.group(1) == shim.PINNED_VERSION


def test_another_version_is_refused_naming_both_versions() -> None:
    with pytest.raises(shim.PysyncobjMismatch) as caught:
        shim.check("0.3.18", shim.NEEDS)
    assert isinstance(caught.value, ImportError)
    assert "pysyncobj 0.3.18 is installed" in str(caught.value)
    assert "pysyncobj==0.3.17" in str(caught.value)


class FakeSyncObj:
    """Has `__raftLog` (set in __init__) and `_isLeader`, nothing else the shim needs."""

    def __init__(self) -> None:
        self.__raftLog: list[Any] = []

    def _isLeader(self) -> bool:  # noqa: N802 - pysyncobj's name
        return bool(self.__raftLog)


def test_a_missing_method_is_named_with_the_version_found() -> None:
    needs = [shim.Needs(FakeSyncObj, members=("_isLeader", "_FakeSyncObj__sendAppendEntries"))]
    with pytest.raises(shim.PysyncobjMismatch) as caught:
        shim.check(shim.PINNED_VERSION, needs)
    message = str(caught.value)
    assert f"pysyncobj {shim.PINNED_VERSION} lacks" in message
    assert "FakeSyncObj._FakeSyncObj__sendAppendEntries" in message
    assert "_isLeader" not in message


def test_a_missing_instance_attribute_is_named() -> None:
    attributes = ("_FakeSyncObj__raftLog", "_FakeSyncObj__raftNextIndex")
    needs = [shim.Needs(FakeSyncObj, instance_attributes=attributes)]
    with pytest.raises(shim.PysyncobjMismatch, match=r"_FakeSyncObj__raftNextIndex \(instance"):
        shim.check(shim.PINNED_VERSION, needs)
    shim.check(shim.PINNED_VERSION, [shim.Needs(FakeSyncObj, (), ("_FakeSyncObj__raftLog",))])


def test_every_missing_name_is_reported_at_once() -> None:
    module = types.ModuleType("fake_poller")
    needs = [
        shim.Needs(module, members=("createPoller",)),
        shim.Needs(FakeSyncObj, members=("_getLeader",), instance_attributes=("conf",)),
    ]
    with pytest.raises(shim.PysyncobjMismatch) as caught:
        shim.check(shim.PINNED_VERSION, needs)
    message = str(caught.value)
    for name in ("fake_poller.createPoller", "FakeSyncObj._getLeader", "FakeSyncObj.conf"):
        assert name in message


def test_the_accessors_work_on_a_real_unstarted_group(tmp_path: Path) -> None:
    address = "127.0.0.1:1"
    mux = RaftMux(RaftNodeSettings(address, address, "s" * 32))
    driver = RaftDriver(mux, NodeLog(str(tmp_path / "raft_log")))
    settings = GroupSettings(gid="g", self_address=address, peers=(), data_dir=str(tmp_path))
    group = RaftGroup(driver, settings, NullMachine())
    obj = group._obj
    loop = asyncio.new_event_loop()
    try:
        assert (shim.is_leader(obj), shim.leader_address(obj)) == (False, None)
        assert shim.last_log_index(obj) == 1 and shim.log_size(obj) == 1  # pysyncobj's no-op
        assert shim.connected_nodes(obj) == set() and shim.next_index(obj, address) is None
        assert isinstance(shim.next_append_entries_time(obj), float)
        assert shim.queued_commands(obj) == 0
        group.propose(b"x", loop)
        assert shim.queued_commands(obj) == 1 and group.has_queued_commands()
        assert group.journal.size > 0
        assert group.sync_journal() and not group.sync_journal()  # nothing changed since
        # the tick's closing poll(0) watches nothing: a group's poller does nothing, and
        # refuses a subscription (none may come: the mux owns the Raft port)
        with pytest.raises(RuntimeError, match="mux owns the Raft port"):
            obj._poller.subscribe(0, lambda *_: None, 1)
        group.tick()
    finally:
        driver.stop()
        loop.close()

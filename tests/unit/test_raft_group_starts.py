"""A group start that fails leaves nothing behind that a later start trips over
(raft_groups/manager.py `reconcile`, syncobj_adapter/group.py): the groups a reconcile
started before the failure are kept as this node's, and a group whose creation failed
after its journal was opened can be created again. Seen in a cluster test: a restarted
node's groups stayed "not running" for good ("already has its journal open")."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kv.errors import NotReady
from kv.memory import MemoryEngine
from raft_groups import manager
from raft_groups.manager import RaftGroups
from raft_groups.syncobj_adapter import GroupSettings, NodeLog, RaftDriver, RaftGroup, RaftMux
from raft_groups.syncobj_adapter import group as group_module
from raft_groups.syncobj_adapter.settings import RaftNodeSettings
from tests.ports import free_port
from tests.unit.raft_fakes import NullMachine

ADDRESS = f"127.0.0.1:{free_port()}"


def _driver(tmp_path: Path) -> RaftDriver:
    mux = RaftMux(RaftNodeSettings(ADDRESS, ADDRESS, "s" * 32))
    return RaftDriver(mux, NodeLog(str(tmp_path / "log")))


def test_a_group_whose_creation_failed_can_be_created_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = _driver(tmp_path)
    settings = GroupSettings(gid="g", self_address=ADDRESS, peers=(), data_dir=str(tmp_path / "g"))
    init = group_module._SyncObj.__init__

    def failing(self: Any, *args: Any) -> None:
        raise OSError(5, "EIO reading the snapshot")

    monkeypatch.setattr(group_module._SyncObj, "__init__", failing)
    try:
        with pytest.raises(OSError, match="EIO"):
            RaftGroup(driver, settings, NullMachine())
        monkeypatch.setattr(group_module._SyncObj, "__init__", init)
        group = RaftGroup(driver, settings, NullMachine())
        assert group.journal.gid == "g" and len(group.journal) == 1  # pysyncobj's no-op
    finally:
        driver.stop()


def test_groups_started_before_a_failed_start_stay_this_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = {g: SimpleNamespace(gid=g, joining=lambda node: False) for g in ("a", "b", "c")}
    monkeypatch.setattr(manager, "hosted_groups", lambda md, node: specs)
    started: list[str] = []

    def start(self: RaftGroups, spec: Any) -> Any:
        gid = next(g for g, s in specs.items() if s is spec)
        if gid == "b" and "b" not in started:
            started.append(gid)
            raise NotReady("no Raft address known for member 'n4'")
        started.append(gid)
        return manager.Hosted(spec, None, None, None)  # type: ignore[arg-type]

    monkeypatch.setattr(RaftGroups, "_start", start)

    async def main() -> set[str]:
        driver = _driver(tmp_path)
        groups = RaftGroups(
            driver,
            MemoryEngine(),
            "n1",
            lambda n: ADDRESS,
            str(tmp_path),
            asyncio.get_running_loop(),
        )
        try:
            with pytest.raises(NotReady):
                await groups.reconcile(None)  # type: ignore[arg-type]
            assert set(groups._running) == {"a"}
            await groups.reconcile(None)  # type: ignore[arg-type]
            return set(groups._running)
        finally:
            driver.stop()

    assert asyncio.run(main()) == {"a", "b", "c"}
    assert started == ["a", "b", "b", "c"]

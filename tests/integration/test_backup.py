"""`kvctl backup` / `kvctl restore` against real nodes (issue 13 item 6, docs/backup.md).

Two clusters of three in-process founders (this tier's nodes: kv.node.Node on loopback,
LevelDB on tmp dirs), the source with 16 partitions and the target with 8, so a restore
re-routes every key. Per mode: KV_BACKUP_KEYS keys (default 1000) are written, some with a
TTL; writers keep writing (new keys and overwrites) while kvctl backs the keyspace up;
the archive is restored into a new keyspace of the fresh cluster, and every key
acknowledged before the backup started is there with its value (or a value a concurrent
writer wrote to it), TTL keys with their `expires_at`; a corrupted archive is refused
(exit 10) and creates nothing. Every node is stopped, also on failure; every wait is a
poll with a deadline.

`KV_BACKUP_KEYS=100000 pytest tests/integration/test_backup.py -s` prints the timings.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from kv.client import KvClient, SyncClient
from kv.errors import KeyNotFound, KvError
from kvctl import errors
from kvctl.cli import cli
from tests.integration.conftest import (
    Api,
    NodeThread,
    auth_node,
    create_keyspace,
    founder_configs,
    running,
)

KEYS = int(os.environ.get("KV_BACKUP_KEYS", "1000"))
TTL_EVERY = 10  # every tenth key has a TTL
TTL_S = 3600
IN_FLIGHT = 64
MODES = {
    "linearizable": {"consistency": "linearizable", "replication": 3},
    "eventual": {"consistency": "eventual", "replication": 3, "read_quorum": 2, "write_quorum": 2},
}
SEED = int(os.environ.get("KV_TEST_SEED", str(random.randrange(1 << 30))))


def _endpoints(nodes: dict[str, NodeThread]) -> list[str]:
    return [n.config.advertise for n in nodes.values()]


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], list[str]]]:
    root = tmp_path_factory.mktemp("backup")
    with (
        running(founder_configs(root / "source", 3, partitions=16)) as source,
        running(founder_configs(root / "target", 3, partitions=8)) as target,
    ):
        yield _endpoints(source), _endpoints(target)


def kvctl(endpoints: list[str], *args: str) -> Result:
    argv = ["--endpoints", ",".join(endpoints), "--timeout", "30", *args]
    result = CliRunner().invoke(cli, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def value_of(i: int, round_: int = 0) -> Any:
    return {"i": i, "round": round_, "pad": "x" * 40}


async def _load(endpoints: list[str], ks: str, keys: range) -> None:
    """Write keys[i] = value_of(i) (a TTL on every TTL_EVERY-th), IN_FLIGHT at a time."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    async with KvClient(endpoints, timeout=30.0, retries=10) as client:

        async def one(i: int) -> None:
            async with gate:
                ttl = TTL_S if i % TTL_EVERY == 0 else None
                await client.put(ks, f"k{i}", value_of(i), ttl_s=ttl)

        await asyncio.gather(*(one(i) for i in keys))


class Writers:
    """Writes while the backup runs: new keys `w<n>` and overwrites of `k<i>` with round 1
    values (eventual: with the context of a read first, so no sibling is made); every
    attempted overwrite is remembered (acknowledged or not, it may land)."""

    def __init__(self, endpoints: list[str], ks: str, eventual: bool) -> None:
        self.eventual = eventual
        self.client = SyncClient(endpoints, timeout=10.0)
        self.ks = ks
        self.stop = threading.Event()
        self.attempted: dict[str, list[Any]] = {}
        self.acked = 0
        self.rng = random.Random(SEED)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            if n % 2:
                key, value = f"w{n}", {"w": n}
            else:
                i = self.rng.randrange(KEYS)
                key, value = f"k{i}", value_of(i, 1)
            self.attempted.setdefault(key, []).append(value)
            try:
                seen = self.client.get(self.ks, key) if self.eventual and n % 2 == 0 else {}
                self.client.put(self.ks, key, value, context=seen.get("context"))
                self.acked += 1
            except KvError:
                continue

    def __enter__(self) -> Writers:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.client.close()
        assert not self.thread.is_alive()


async def _read_all(endpoints: list[str], ks: str, keys: list[str]) -> dict[str, Any]:
    gate = asyncio.Semaphore(IN_FLIGHT)
    found: dict[str, Any] = {}
    async with KvClient(endpoints, timeout=30.0, retries=10) as client:

        async def one(key: str) -> None:
            async with gate:
                try:
                    found[key] = await client.get(ks, key)
                except KeyNotFound:
                    found[key] = None

        await asyncio.gather(*(one(k) for k in keys))
    return found


@pytest.mark.parametrize("mode", sorted(MODES))
def test_backup_under_writes_restores_into_a_fresh_cluster(
    clusters: tuple[list[str], list[str]], tmp_path: Path, mode: str
) -> None:
    print(f"seed {SEED}, {KEYS} keys, {mode}")
    source, target = clusters
    ks, restored = f"{mode[:3]}src", f"{mode[:3]}copy"
    create_keyspace_everywhere(source, ks, MODES[mode])
    began = time.monotonic()
    asyncio.run(_load(source, ks, range(KEYS)))
    loaded = time.monotonic()
    keys = [f"k{i}" for i in range(KEYS)]
    before = asyncio.run(_read_all(source, ks, [k for k in keys if int(k[1:]) % TTL_EVERY == 0]))
    out = tmp_path / f"{ks}.kvb"
    with Writers(source, ks, mode == "eventual") as writers:
        backed = kvctl(source, "--json", "backup", "--keyspace", ks, "--out", str(out))
    assert backed.exit_code == 0, backed.output
    report = json.loads(backed.stdout)
    assert report["records"] >= KEYS and report["consistency"] == mode
    backup_done = time.monotonic()

    done = kvctl(target, "--json", "restore", str(out), "--keyspace", restored)
    assert done.exit_code == 0, done.output
    restore_done = time.monotonic()
    with SyncClient(target) as client:
        described = client.get_keyspace(restored)
    assert {k: v for k, v in described.items() if k != "name"} == {
        **MODES[mode],
        **({"max_siblings": 32, "durability": "process"} if mode == "eventual" else {}),
    }

    found = asyncio.run(_read_all(target, restored, keys))
    for i, key in enumerate(keys):
        reply = found[key]
        assert reply is not None, f"{key} acknowledged before the backup is missing"
        allowed = [value_of(i), *writers.attempted.get(key, [])]
        assert reply.get("value") in allowed, (key, reply)
        if i % TTL_EVERY == 0 and reply["value"] == value_of(i):
            assert reply["expires_at"] == before[key]["expires_at"], (key, reply)
        elif reply["value"] != value_of(i):  # overwritten by a writer, without a TTL
            assert "expires_at" not in reply, (key, reply)
    print(
        f"{mode}: load {loaded - began:.1f}s, backup {report['seconds']:.1f}s "
        f"({report['records']} records, {report['bytes']} bytes, {writers.acked} writes "
        f"acknowledged meanwhile), restore {restore_done - backup_done:.1f}s"
    )

    again = kvctl(target, "restore", str(out), "--keyspace", restored)
    assert again.exit_code == errors.REFUSED and "already exists" in again.output

    damaged = tmp_path / "damaged.kvb"
    data = bytearray(out.read_bytes())
    data[len(data) // 3] ^= 0x04
    damaged.write_bytes(bytes(data))
    refused = kvctl(target, "restore", str(damaged), "--keyspace", f"{mode[:3]}bad")
    assert refused.exit_code == errors.DAMAGED, refused.output
    assert "damaged" in refused.output or "checksum" in refused.output
    with SyncClient(target) as client:
        names = [k["name"] for k in client.list_keyspaces()]
    assert f"{mode[:3]}bad" not in names  # nothing created, nothing written


def test_eventual_siblings_keep_their_causal_history(
    clusters: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    """Two blind writes make siblings; restored, they are still siblings, and a write with
    the restored read's context supersedes both."""
    source, target = clusters
    create_keyspace_everywhere(source, "sib", MODES["eventual"])
    with SyncClient(source) as client:
        client.put("sib", "cart", ["milk"])
        client.put("sib", "cart", ["eggs"])
        assert len(client.get("sib", "cart")["siblings"]) == 2
    out = tmp_path / "sib.kvb"
    assert kvctl(source, "backup", "--keyspace", "sib", "--out", str(out)).exit_code == 0
    assert kvctl(target, "restore", str(out), "--keyspace", "sib2").exit_code == 0
    with SyncClient(target) as client:
        seen = client.get("sib2", "cart")
        assert sorted(map(str, seen["siblings"])) == ["['eggs']", "['milk']"]
        client.put("sib2", "cart", ["milk", "eggs"], context=seen["context"])
        assert client.get("sib2", "cart")["value"] == ["milk", "eggs"]


def create_keyspace_everywhere(endpoints: list[str], name: str, config: dict[str, Any]) -> None:
    host, _, port = endpoints[0].rpartition(":")
    create_keyspace(Api(host, int(port), ""), name, config)


def test_groups_on_other_nodes_are_exported_and_imported_through_a_member(
    clusters: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    """Replication 1: most groups live on another node than the one asked, so pages and
    imports travel as `lin_export` / `lin_import` (kvctl asks one endpoint only)."""
    source, target = clusters
    config = {"consistency": "linearizable", "replication": 1}
    create_keyspace_everywhere(source, "one", config)
    with SyncClient(source, timeout=30.0, retries=10) as client:
        for i in range(60):
            client.put("one", f"k{i}", i, ttl_s=TTL_S if i % 2 else None)
        expires = {f"k{i}": client.get("one", f"k{i}").get("expires_at") for i in range(60)}
    out = tmp_path / "one.kvb"
    assert kvctl(source[:1], "backup", "--keyspace", "one", "--out", str(out)).exit_code == 0
    assert kvctl(target[:1], "restore", str(out), "--keyspace", "one2").exit_code == 0
    assert kvctl(source[1:2], "restore", str(out), "--keyspace", "one3").exit_code == 0
    for endpoints, name in ((target, "one2"), (source, "one3")):  # another cluster, the same
        with SyncClient(endpoints, timeout=30.0, retries=10) as client:
            for i in range(60):
                found = client.get(name, f"k{i}")
                assert (found["value"], found["version"]) == (i, 1)
                assert found.get("expires_at") == expires[f"k{i}"]


def test_export_and_import_need_an_admin_token(tmp_path: Path) -> None:
    """A backup reads everything and a restore writes past any condition: admin only."""
    with auth_node(tmp_path) as (api, admin):
        as_admin = {"Authorization": f"Bearer {admin}"}
        ks = {"consistency": "eventual", "replication": 1}
        assert api.put("/v1/keyspaces/a", ks, headers=as_admin).status == 201
        minted = api.request(
            "POST",
            "/v1/tokens",
            json_body={"name": "w", "role": "write", "keyspaces": ["a"]},
            headers=as_admin,
        )
        as_writer = {"Authorization": f"Bearer {minted.json()['token']}"}
        body = {
            "records": [["k", [{"dot": ["x", 1], "context": {}, "value": 1, "deleted": False}]]]
        }
        for headers, status in (({}, 401), (as_writer, 403), (as_admin, 200)):
            assert api.get("/v1/keyspaces/a/export?partition=0", headers=headers).status == status
            reply = api.request("POST", "/v1/keyspaces/a/import", json_body=body, headers=headers)
            assert reply.status == status, reply

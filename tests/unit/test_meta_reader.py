"""A non-voter's metadata (kv/meta_reader.py `MetaReader`) against `MetaServer`s over an
in-memory transport that encodes every request and reply like the wire: the reader learns
from its seeds, follows newer epochs only, skips nodes that do not answer, backs off while
nobody does, and sends keyspace changes to a voter — whose metadata it takes with the
outcome, so the change is visible on return. No sleeps: the poll loop's sleep is injected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from kv import meta_machine
from kv.errors import (
    KvError,
    NoLeader,
    NotReady,
    PeerTimeout,
    PeerUnreachable,
    Retryable,
    UnknownOutcome,
)
from kv.internode import Operation, OpTable, Req, Resp
from kv.meta import Member, Metadata
from kv.meta_ops import META_GET, MetaGet
from kv.meta_reader import MetaReader, MetaServer

MEMBERS = [Member(f"n{i}", f"10.0.0.{i}:7001", f"10.0.0.{i}:7101") for i in (1, 2, 3)]
VOTERS = ("n1", "n2", "n3")
ME = "10.0.0.4:7001"


def ks_change(name: str) -> dict[str, Any]:
    return {
        "type": "put_keyspace",
        "keyspace": {"name": name, "consistency": "linearizable", "replication": 3},
    }


class Voter:
    """The meta group's face, applying changes with kv.meta_machine.apply at once."""

    def __init__(self, bootstrapped: bool = True) -> None:
        self.voters = VOTERS
        self._md = Metadata()
        self.changes: list[dict[str, Any]] = []
        if bootstrapped:
            boot = {"type": "bootstrap", "members": [m.to_dict() for m in MEMBERS]}
            self._md, _ = meta_machine.apply(self._md, {**boot, "partitions": 8, "vnodes": 4})

    @property
    def metadata(self) -> Metadata:
        return self._md

    def subscribe(self, listener: Callable[[Metadata], None]) -> None:
        pass

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.changes.append(change)
        self._md, outcome = meta_machine.apply(self._md, change)
        return outcome

    def summary(self) -> dict[str, Any]:
        return {"voter": True}

    def raft_view(self) -> tuple[str | None, tuple[str, ...]]:
        return MEMBERS[0].raft, tuple(m.raft for m in MEMBERS)


class Net:
    """HTTP address → the node's OpTable; requests and replies cross as wire JSON."""

    def __init__(self) -> None:
        self.tables: dict[str, OpTable] = {}
        self.broken: dict[str, KvError] = {}  # address → the error every call to it raises
        self.calls: list[tuple[str, str]] = []

    def serve(self, address: str, view: Any, votes: bool) -> None:
        table = OpTable()
        MetaServer(view, votes=votes).register(table)
        self.tables[address] = table

    async def call_at(
        self,
        address: str,
        op: Operation[Req, Resp],
        request: Req,
        timeout: float,
        peer: str | None = None,
    ) -> Resp:
        self.calls.append((address, op.name))
        if address in self.broken:
            raise self.broken[address]
        if address not in self.tables:
            raise PeerUnreachable(f"{address}: connection refused")
        return op.reply(await self.tables[address].dispatch(op.name, request.to_wire()))


def cluster(voter: Voter | None = None) -> tuple[Net, Voter]:
    net, voter = Net(), voter or Voter()
    for m in MEMBERS:
        net.serve(m.http, voter, votes=True)
    return net, voter


def reader(net: Net, seeds: tuple[str, ...] = (MEMBERS[0].http,)) -> MetaReader:
    return MetaReader(ME, seeds, net, interval=0.5, max_backoff=4.0, call_timeout=1.0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_joiner_learns_the_metadata_and_the_voters_from_a_seed() -> None:
    net, voter = cluster()
    r = reader(net)
    seen: list[int] = []
    r.subscribe(lambda md: seen.append(md.epoch))
    assert not r.metadata.bootstrapped
    assert run(r.poll()) is True
    assert r.metadata == voter.metadata and r.voters == VOTERS
    assert seen == [1] and r.source == MEMBERS[0].http


def test_an_unchanged_epoch_is_not_sent_again_and_a_newer_one_is_taken() -> None:
    net, voter = cluster()
    r = reader(net)
    seen: list[int] = []
    r.subscribe(lambda md: seen.append(md.epoch))

    async def scenario() -> None:
        await r.poll()
        assert await net.tables[MEMBERS[0].http].dispatch("meta_get", {"known_epoch": 1}) == {
            "epoch": 1,
            "voters": list(VOTERS),
            "metadata": None,
            "leader": MEMBERS[0].raft,  # a voter's group: its leader and configuration
            "members": [m.raft for m in MEMBERS],
        }
        await r.poll()
        await voter.change(ks_change("a"), 1.0)
        await r.poll()

    run(scenario())
    assert seen == [1, 2] and r.metadata.keyspace("a") is not None


def test_metadata_never_moves_backwards() -> None:
    net, voter = cluster()
    r = reader(net)
    run(voter.change(ks_change("a"), 1.0))
    run(r.poll())
    assert not r.adopt(Voter().metadata, "old") and r.metadata.epoch == 2


def test_a_dead_seed_is_skipped_and_the_next_poll_starts_past_it() -> None:
    net, _ = cluster()
    r = reader(net, seeds=("10.0.0.9:7001", MEMBERS[1].http))
    assert run(r.poll()) is True
    assert net.calls == [("10.0.0.9:7001", "meta_get"), (MEMBERS[1].http, "meta_get")]
    net.calls.clear()
    run(r.poll())  # now the voters are known: they come first, the dead seed last
    assert net.calls == [(MEMBERS[1].http, "meta_get")]


def test_a_node_without_bootstrapped_metadata_is_not_a_source() -> None:
    net = Net()
    net.serve(MEMBERS[0].http, Voter(bootstrapped=False), votes=True)
    with pytest.raises(NotReady):
        run(net.call_at(MEMBERS[0].http, META_GET, MetaGet(0), 1.0))
    assert run(reader(net).poll()) is False


def test_polls_back_off_while_nobody_answers() -> None:
    net = Net()
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 5:
            net.serve("10.0.0.9:7001", Voter(), votes=True)  # the seed comes up
        if len(delays) == 7:
            raise asyncio.CancelledError

    r = MetaReader(
        ME, ("10.0.0.9:7001",), net, interval=0.5, max_backoff=4.0, call_timeout=1.0, sleep=sleep
    )
    with pytest.raises(asyncio.CancelledError):
        run(r.run())
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0, 0.5, 0.5]
    assert r.failed_polls == 0 and r.metadata.bootstrapped


def test_a_change_goes_to_a_voter_and_is_visible_on_return() -> None:
    net, voter = cluster()
    r = reader(net)

    async def scenario() -> dict[str, Any]:
        await r.poll()
        return await r.change(ks_change("b"), 2.0)

    assert run(scenario()) == {"status": "created"}
    assert voter.changes == [ks_change("b")] and r.metadata.keyspace("b") is not None


def test_a_change_skips_voters_that_certainly_did_not_apply_it() -> None:
    net, voter = cluster()
    r = reader(net)
    run(r.poll())
    net.broken[MEMBERS[0].http] = PeerUnreachable("refused")
    net.broken[MEMBERS[1].http] = NoLeader("no leader")
    assert run(r.change(ks_change("c"), 2.0)) == {"status": "created"}
    assert [a for a, op in net.calls if op == "meta_change"] == [m.http for m in MEMBERS]


def test_a_change_whose_voter_timed_out_is_an_unknown_outcome_not_retried() -> None:
    net, voter = cluster()
    r = reader(net)
    run(r.poll())
    net.broken[MEMBERS[0].http] = PeerTimeout("no reply")
    with pytest.raises(UnknownOutcome):
        run(r.change(ks_change("d"), 2.0))
    assert [a for a, op in net.calls if op == "meta_change"] == [MEMBERS[0].http]


def test_a_change_with_no_voter_reachable_is_retryable() -> None:
    net, _ = cluster()
    r = reader(net)
    run(r.poll())
    for m in MEMBERS:
        net.broken[m.http] = PeerUnreachable("refused")
    with pytest.raises(NoLeader, match="no meta-group voter"):
        run(r.change(ks_change("e"), 2.0))
    with pytest.raises(NotReady, match="no meta-group voter known"):
        run(reader(Net(), seeds=()).change(ks_change("e"), 2.0))


def test_a_node_that_knows_no_voter_sends_a_change_to_its_seeds() -> None:
    net, voter = cluster()
    run(reader(net).change(ks_change("g"), 2.0))
    assert [a for a, op in net.calls if op == "meta_change"] == [MEMBERS[0].http]
    assert len(voter.changes) == 1


def test_a_non_voter_refuses_a_change_instead_of_forwarding_it_again() -> None:
    net, voter = cluster()
    net.serve(ME, reader(net), votes=False)
    with pytest.raises(NotReady, match="does not vote"):
        run(net.tables[ME].dispatch("meta_change", {"change": ks_change("f"), "timeout_s": 1}))
    assert voter.changes == []


def test_an_unexpected_failure_is_a_failed_poll_not_the_end_of_the_loop() -> None:
    net = Net()
    polls: list[int] = []

    async def sleep(delay: float) -> None:
        polls.append(r.failed_polls)
        if len(polls) == 3:
            raise asyncio.CancelledError

    async def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("bug")

    net.call_at = broken  # type: ignore[method-assign]
    r = MetaReader(
        ME, ("10.0.0.9:7001",), net, interval=0.5, max_backoff=4.0, call_timeout=1.0, sleep=sleep
    )
    with pytest.raises(asyncio.CancelledError):
        run(r.run())
    assert polls == [1, 2, 3]


LATE = {"name": "late", "consistency": "eventual", "replication": 1}


def test_sync_brings_what_the_voters_committed_and_concurrent_syncs_share_rounds() -> None:
    """`sync` is a barrier sent to a voter (kv/barriers.py): a keyspace committed after the
    last poll is here when it returns; syncs arriving while one is in flight share the next
    round, so three calls make at most two round trips."""
    net, voter = cluster()
    r = reader(net)

    async def scenario() -> None:
        await r.poll()
        await voter.change({"type": "put_keyspace", "keyspace": LATE}, 1.0)
        assert r.metadata.keyspace("late") is None
        net.calls.clear()
        await asyncio.gather(r.sync(1.0), r.sync(1.0), r.sync(1.0))
        assert r.metadata.keyspace("late") is not None
        assert [op for _, op in net.calls] in (["meta_change"], ["meta_change"] * 2)
        assert voter.changes[-1] == {"type": "sync"}

    run(scenario())


def test_a_sync_no_voter_answers_is_retryable() -> None:
    net, _ = cluster()
    r = reader(net)
    run(r.poll())
    for m in MEMBERS:
        net.broken[m.http] = PeerUnreachable(f"{m.http}: connection refused")
    with pytest.raises(Retryable):
        run(r.sync(1.0))

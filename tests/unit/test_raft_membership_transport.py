"""How the mux follows a group's changing peer set (syncobj_adapter/mux.py), and the cluster
a snapshot hands back to pysyncobj (syncobj_adapter/snapshot.py).

A real `RaftMux` that is never ticked (so it binds no port and connects to nobody); its
connection events are fed by hand. A `GroupTransport` without a SyncObj records what
pysyncobj would have been told.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.node import TCPNode

from raft_groups.syncobj_adapter import RaftMux, RaftNodeSettings
from raft_groups.syncobj_adapter.mux import GroupTransport
from raft_groups.syncobj_adapter.snapshot import BackgroundSnapshot

SELF, B, C, D = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"


class Recorder:
    def __init__(self, group: GroupTransport) -> None:
        self.events: list[tuple[str, str]] = []
        group.setOnMessageReceivedCallback(lambda n, m: self.events.append(("message", n.id)))
        group.setOnNodeConnectedCallback(lambda n: self.events.append(("connected", n.id)))
        group.setOnNodeDisconnectedCallback(lambda n: self.events.append(("disconnected", n.id)))


@pytest.fixture
def mux() -> Iterator[RaftMux]:
    m = RaftMux(RaftNodeSettings(SELF, SELF, "s" * 32, peers=(B,)))
    try:
        yield m
    finally:
        m.close()


def _group(mux: RaftMux, gid: str, peers: tuple[str, ...]) -> tuple[GroupTransport, Recorder]:
    group = GroupTransport(mux, gid, peers)
    recorder = Recorder(group)
    mux.register(group)
    return group, recorder


def test_a_message_from_outside_the_group_is_dropped(mux: RaftMux) -> None:
    """A removed member (or one not yet added) must not reach the group: pysyncobj would
    take its vote request's higher term and depose the leader."""
    _, recorder = _group(mux, "g", (B, C))
    vote = {"type": "request_vote", "term": 9, "last_log_index": 1, "last_log_term": 0}
    mux._on_message(TCPNode(D), [("g", vote)])
    assert recorder.events == [] and mux.dropped == 1 and "g" not in mux.dirty
    mux._on_message(TCPNode(C), [("g", vote)])
    assert recorder.events == [("message", C)] and mux.dropped == 1


def test_an_added_peer_already_connected_is_reported_at_once(mux: RaftMux) -> None:
    """The node's connection predates the group's interest (other groups share it)."""
    group, recorder = _group(mux, "g", (B,))
    mux.pin_peer(D)  # a pending add: connect before any group names it
    mux._on_connected(mux.add_peer(D))
    assert recorder.events == [] and mux.is_connected(D)
    group.addNode(TCPNode(D))
    assert recorder.events == [("connected", D)] and D in group.peer_addresses
    mux._on_message(TCPNode(D), [("g", {"type": "next_node_idx", "success": False})])
    assert recorder.events[-1] == ("message", D)


def test_a_dropped_peer_is_disconnected_and_forgotten_when_nothing_names_it(
    mux: RaftMux,
) -> None:
    g1, r1 = _group(mux, "g1", (B, C, D))
    g2, _ = _group(mux, "g2", (C,))
    for address in (C, D):
        mux._on_connected(mux.add_peer(address))
    r1.events.clear()
    g1.dropNode(TCPNode(D))
    assert r1.events == [("disconnected", D)]
    assert not mux.knows(D) and not mux.is_connected(D)  # no group names d any more
    g1.dropNode(TCPNode(C))
    assert mux.knows(C) and mux.is_connected(C)  # g2 still names c
    g1.dropNode(TCPNode(B))
    assert mux.knows(B)  # b is one of the node's configured peers


def test_a_pin_keeps_a_peer_until_released(mux: RaftMux) -> None:
    mux.pin_peer(D)
    mux.forget_if_unused(D)
    assert mux.knows(D)
    mux.unpin_peer(D)
    assert not mux.knows(D)


def test_closing_a_group_forgets_the_peers_only_it_named(mux: RaftMux) -> None:
    g1, _ = _group(mux, "g1", (C, D))
    _group(mux, "g2", (C,))
    g1.destroy()
    assert mux.knows(C) and not mux.knows(D)


class _Machine:
    def snapshot(self) -> Iterator[bytes]:
        return iter([b""])

    def restore(self, chunks: Iterator[bytes]) -> None:
        b"".join(chunks)


def test_a_snapshot_hands_back_its_cluster_as_nodes(tmp_path: Path) -> None:
    """pysyncobj drops itself from a restored cluster with `node != selfNode`, which is
    never False for a string: a restored member would count itself as a peer."""
    path = tmp_path / "raft.snapshot"
    header: dict[str, Any] = {"last": ["", 9, 2], "prev": ["", 8, 2], "cluster": [SELF, B, D]}
    path.write_bytes(json.dumps(header).encode() + b"\n")
    last, prev, cluster = BackgroundSnapshot(_Machine()).read(str(path))
    assert (last[1], prev[1]) == (9, 8)
    assert all(isinstance(node, TCPNode) for node in cluster)
    assert [node.id for node in cluster if node != TCPNode(SELF)] == [B, D]

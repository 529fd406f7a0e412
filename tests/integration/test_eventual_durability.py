"""`durability: "fsync"` on a real node (issue 11 item 8): the keyspace config says it, a
write to it is answered after a group-commit sync of the node's LevelDB, a write to a
`process` keyspace is not, and a bad value is a 400 naming the field."""

from __future__ import annotations

from tests.integration.conftest import Api, NodeThread, create_keyspace, error_of, key_path


def test_a_keyspace_says_its_durability(api: Api) -> None:
    create_keyspace(
        api, "durable", {"consistency": "eventual", "replication": 1, "durability": "fsync"}
    )
    create_keyspace(api, "fast", {"consistency": "eventual", "replication": 1})
    assert api.get("/v1/keyspaces/durable").json()["durability"] == "fsync"
    assert api.get("/v1/keyspaces/fast").json()["durability"] == "process"


def test_a_bad_durability_is_a_400_naming_the_field(api: Api) -> None:
    body = {"consistency": "eventual", "replication": 1, "durability": "always"}
    reply = api.put("/v1/keyspaces/bad", body)
    assert reply.status == 400
    assert error_of(reply)["field"] == "durability"


def test_only_fsync_writes_are_synced_before_the_answer(api: Api, node: NodeThread) -> None:
    create_keyspace(
        api, "durable", {"consistency": "eventual", "replication": 1, "durability": "fsync"}
    )
    create_keyspace(api, "fast", {"consistency": "eventual", "replication": 1})
    commit = node.node.group_commit
    before = commit.waits, commit.syncs
    for i in range(5):
        assert api.put(key_path("fast", f"k{i}"), {"value": i}).status == 200
    assert (commit.waits, commit.syncs) == before
    for i in range(5):
        assert api.put(key_path("durable", f"k{i}"), {"value": i}).status == 200
        assert api.delete(key_path("durable", f"k{i}")).status == 200
    assert commit.waits == before[0] + 10 and commit.syncs >= before[1] + 10
    reply = api.get(key_path("durable", "k0"))
    assert reply.status == 404  # deleted: a tombstone, synced like any write

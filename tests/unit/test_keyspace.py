"""Keyspace configuration parsing (DESIGN.md §4 N/R/W per keyspace, §5 "400 ... the message
names the field", §8.5 config validated with `raise`, unknown keys are errors)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kv.errors import InvalidRequest
from kv.keyspace import (
    DEFAULT_MAX_SIBLINGS,
    MAX_REPLICATION,
    KeyspaceConfig,
    parse_keyspace,
    validate_name,
)

BIG = 9  # a cluster larger than MAX_REPLICATION


def eventual(**extra: Any) -> dict[str, Any]:
    return {"consistency": "eventual", "replication": 3, **extra}


def rejects(name: str, body: Any, cluster_size: int = 5) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_keyspace(name, body, cluster_size)
    return info.value


def assert_names_field(exc: InvalidRequest, field: str) -> None:
    assert exc.details["field"] == field
    assert exc.message.startswith(f"{field}: ")
    assert exc.to_wire()["error"]["field"] == field


# -- name -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "A_b-c.d", "_x", "0", "9.9-rc_1", "k" * 64])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name
    assert parse_keyspace(name, eventual(), 3).name == name


@pytest.mark.parametrize(
    "name",
    ["", "k" * 65, ".hidden", "-dash", "a/b", "a b", "a\x00b", "ks%", "ümlaut", "a:b"],
)
def test_invalid_names_name_the_keyspace_field(name: str) -> None:
    assert_names_field(rejects(name, eventual()), "keyspace")


def test_name_with_trailing_newline_is_rejected() -> None:
    # A percent-encoded path segment "ks%0A" decodes to "ks\n".
    assert_names_field(rejects("ks\n", eventual()), "keyspace")


# -- body shape and unknown fields ------------------------------------------------------------


@pytest.mark.parametrize("body", [None, [], "eventual", 3, True])
def test_body_must_be_an_object(body: Any) -> None:
    assert_names_field(rejects("ks", body), "body")


@pytest.mark.parametrize("field", ["replicas", "name", "uid", "r", "w", "Consistency"])
def test_unknown_field_is_refused_and_named(field: str) -> None:
    assert_names_field(rejects("ks", eventual(**{field: 1})), field)


def test_first_unknown_field_in_sorted_order_is_named() -> None:
    assert_names_field(rejects("ks", eventual(zzz=1, aaa=2)), "aaa")


# -- consistency ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "strong", "Eventual", 1, ["eventual"]])
def test_consistency_must_be_one_of_the_two_modes(value: Any) -> None:
    body = {"replication": 1} if value is None else {"consistency": value, "replication": 1}
    exc = rejects("ks", body)
    assert_names_field(exc, "consistency")
    assert repr(value) in exc.message


# -- replication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cluster_size", "replication", "ok"),
    [
        (1, 1, True),
        (1, 2, False),
        (3, 3, True),
        (3, 4, False),
        (5, 0, False),
        (5, -1, False),
        (MAX_REPLICATION, MAX_REPLICATION, True),
        (BIG, MAX_REPLICATION, True),
        (BIG, MAX_REPLICATION + 1, False),  # capped even when the cluster is larger
    ],
)
@pytest.mark.parametrize("consistency", ["linearizable", "eventual"])
def test_replication_is_bounded_by_cluster_size_and_max(
    consistency: str, cluster_size: int, replication: int, ok: bool
) -> None:
    body = {"consistency": consistency, "replication": replication}
    if ok:
        assert parse_keyspace("ks", body, cluster_size).replication == replication
    else:
        exc = rejects("ks", body, cluster_size)
        assert_names_field(exc, "replication")
        assert str(replication) in exc.message


def test_replication_defaults_to_three() -> None:
    assert parse_keyspace("ks", {"consistency": "linearizable"}, 3).replication == 3
    assert_names_field(rejects("ks", {"consistency": "linearizable"}, 2), "replication")


@pytest.mark.parametrize("field", ["replication", "read_quorum", "write_quorum", "max_siblings"])
@pytest.mark.parametrize("value", [True, False, 2.0, "2", None, [2]])
def test_integer_fields_reject_bool_float_and_strings(field: str, value: Any) -> None:
    # bool is an int subclass in Python; JSON `true` must not be read as 1.
    assert_names_field(rejects("ks", {**eventual(), field: value}), field)


# -- quorums (Dynamo §4.5: R and W in 1..N) ---------------------------------------------


@pytest.mark.parametrize(("replication", "majority"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_quorums_default_to_majority(replication: int, majority: int) -> None:
    cfg = parse_keyspace("ks", {"consistency": "eventual", "replication": replication}, 5)
    assert (cfg.read_quorum, cfg.write_quorum) == (majority, majority)
    assert cfg.max_siblings == DEFAULT_MAX_SIBLINGS


@pytest.mark.parametrize("field", ["read_quorum", "write_quorum"])
@pytest.mark.parametrize(("value", "ok"), [(0, False), (1, True), (3, True), (4, False)])
def test_quorum_bounds(field: str, value: int, ok: bool) -> None:
    body = eventual(**{field: value})  # replication 3
    if ok:
        assert getattr(parse_keyspace("ks", body, 5), field) == value
    else:
        exc = rejects("ks", body)
        assert_names_field(exc, field)
        assert "replication (3)" in exc.message


def test_explicit_quorums_are_kept_independently() -> None:
    cfg = parse_keyspace("ks", eventual(read_quorum=1, write_quorum=3), 3)
    assert (cfg.read_quorum, cfg.write_quorum) == (1, 3)


@pytest.mark.parametrize(("value", "ok"), [(0, False), (1, True), (1000, True), (1001, False)])
def test_max_siblings_bounds(value: int, ok: bool) -> None:
    body = eventual(max_siblings=value)
    if ok:
        assert parse_keyspace("ks", body, 3).max_siblings == value
    else:
        assert_names_field(rejects("ks", body), "max_siblings")


@pytest.mark.parametrize("field", ["read_quorum", "write_quorum", "max_siblings", "durability"])
def test_linearizable_rejects_eventual_only_fields(field: str) -> None:
    body = {"consistency": "linearizable", "replication": 3, field: 1}
    exc = rejects("ks", body)
    assert_names_field(exc, field)
    assert "eventual" in exc.message


def test_linearizable_config_has_no_quorums() -> None:
    cfg = parse_keyspace("ks", {"consistency": "linearizable", "replication": 3}, 3)
    assert cfg == KeyspaceConfig(name="ks", consistency="linearizable", replication=3)
    assert cfg.to_wire() == {"name": "ks", "consistency": "linearizable", "replication": 3}


# -- serialisation and comparison ----------------------------------------------------------


CONFIGS = [
    parse_keyspace("lin", {"consistency": "linearizable", "replication": 1}, 3),
    parse_keyspace("ev", eventual(read_quorum=1, write_quorum=3, max_siblings=7), 3),
    KeyspaceConfig("ev2", "eventual", 5, 3, 3, 1000, uid=2**32 - 1),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
def test_to_dict_from_dict_round_trip(cfg: KeyspaceConfig) -> None:
    assert KeyspaceConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["uid"] == cfg.uid
    assert "uid" not in cfg.to_wire()  # the uid is internal (storage prefix), not API


def test_from_dict_after_json_round_trip() -> None:
    for cfg in CONFIGS:
        assert KeyspaceConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_fixed_fields_differ_lists_consistency_and_replication_only() -> None:
    base = KeyspaceConfig("ks", "eventual", 3, 2, 2, uid=4)
    assert base.fixed_fields_differ(base) == []
    assert base.fixed_fields_differ(KeyspaceConfig("ks", "eventual", 3, 1, 3, 5, uid=9)) == []
    assert base.fixed_fields_differ(KeyspaceConfig("ks", "eventual", 5, 2, 2)) == ["replication"]
    assert base.fixed_fields_differ(KeyspaceConfig("ks", "linearizable", 3)) == ["consistency"]
    assert base.fixed_fields_differ(KeyspaceConfig("ks", "linearizable", 1)) == [
        "consistency",
        "replication",
    ]


def test_same_settings_ignores_uid_only() -> None:
    base = KeyspaceConfig("ks", "eventual", 3, 2, 2, uid=4)
    assert base.same_settings(KeyspaceConfig("ks", "eventual", 3, 2, 2, uid=99))
    assert not base.same_settings(KeyspaceConfig("ks", "eventual", 3, 1, 2, uid=4))
    assert not base.same_settings(KeyspaceConfig("ks", "eventual", 3, 2, 2, max_siblings=5))
    assert not base.same_settings(KeyspaceConfig("other", "eventual", 3, 2, 2, uid=4))


# -- durability (issue 11 item 8) -------------------------------------------------------


def test_durability_defaults_to_process_and_fsync_is_kept() -> None:
    assert parse_keyspace("ks", eventual(), 3).durability == "process"
    cfg = parse_keyspace("ks", eventual(durability="fsync"), 3)
    assert cfg.durability == "fsync"
    assert cfg.to_wire()["durability"] == "fsync"
    assert KeyspaceConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("value", ["FSYNC", "sync", "", None, 1, True, ["fsync"]])
def test_durability_must_be_process_or_fsync(value: Any) -> None:
    exc = rejects("ks", eventual(durability=value))
    assert_names_field(exc, "durability")
    assert "'process' or 'fsync'" in exc.message


def test_a_keyspace_stored_before_durability_existed_reads_as_process() -> None:
    old = {"name": "ks", "consistency": "eventual", "replication": 3, "uid": 4}
    assert KeyspaceConfig.from_dict(old).durability == "process"

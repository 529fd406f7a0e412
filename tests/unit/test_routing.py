"""kv/routing.py: a key request parsed once into a typed, routed request (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from kv import routing
from kv.errors import InvalidRequest, KeyspaceNotFound, TooLarge
from kv.keyspace import KeyspaceConfig
from kv.meta import Metadata
from kv.meta_machine import apply
from kv.routing import Options
from tests.unit import test_meta_membership as membership

MEMBERS = [{"id": f"n{i}", "http": f"h{i}:1", "raft": f"h{i}:2"} for i in range(1, 6)]


def metadata() -> Metadata:
    md, _ = apply(
        Metadata(), {"type": "bootstrap", "members": MEMBERS, "partitions": 16, "vnodes": 8}
    )
    for ks in (
        KeyspaceConfig("ev", "eventual", 3, read_quorum=2, write_quorum=2),
        KeyspaceConfig("lin", "linearizable", 3),
    ):
        md, outcome = apply(md, {"type": "put_keyspace", "keyspace": ks.to_dict()})
        assert outcome["status"] == "created"
    return md


MD = metadata()
OPTS = Options(timeout_s=2.0)


def test_the_route_is_the_rings_preference_list_and_fallbacks() -> None:
    req = routing.get_request(MD, "ev", "k", OPTS)
    ring = MD.ring()
    partition = ring.key_partition("ev", "k")
    assert req.route == routing.Route(
        "eventual", partition, ring.preference_list(partition, 3), ring.fallbacks(partition, 3)
    )
    assert routing.replicas(MD, "eventual", partition, 3) == req.route.replicas


def test_linearizable_routes_carry_no_fallbacks() -> None:
    route = routing.put_request(MD, "lin", "k", {"value": 1}, OPTS).route
    assert route.mode == "linearizable" and route.fallbacks == () and len(route.replicas) == 3


def test_quorums_resolve_from_the_keyspace_and_the_query() -> None:
    assert routing.get_request(MD, "ev", "k", OPTS).r == 2
    got = routing.get_request(MD, "ev", "k", Options(timeout_s=1, r=3, pr=1))
    assert (got.r, got.pr, got.timeout_s) == (3, 1, 1)
    put = routing.put_request(MD, "ev", "k", {"value": 1}, Options(timeout_s=1, w=1))
    assert (put.w, put.pw) == (1, 0)
    lin = routing.get_request(MD, "lin", "k", Options(timeout_s=1, r=3))
    assert (lin.r, lin.pr) == (0, 0)  # linearizable: quorums do not apply


def test_write_fields_arrive_typed() -> None:
    put = routing.put_request(
        MD, "lin", "k", {"value": [1], "if_version": 0, "request_id": "r1"}, OPTS
    )
    assert (put.value, put.if_version, put.request_id, put.context) == ([1], 0, "r1", None)
    ev = routing.delete_request(MD, "ev", "k", {"context": "abc"}, OPTS)
    assert (ev.context, ev.r, ev.w) == ("abc", 2, 2)


@pytest.mark.parametrize(
    ("ks", "body", "field"),
    [
        ("ev", {"value": 1, "if_version": 1}, "if_version"),
        ("lin", {"value": 1, "context": "x"}, "context"),
        ("ev", {"value": 1, "request_id": "r"}, "request_id"),
        ("ev", {"value": 1, "context": 7}, "context"),
        ("lin", {"value": 1, "if_version": -1}, "if_version"),
        ("lin", {"value": 1, "if_version": True}, "if_version"),
        ("lin", {"value": 1, "request_id": ""}, "request_id"),
        ("lin", {"value": 1, "request_id": "x" * 129}, "request_id"),
        ("lin", {"if_version": 1}, "value"),
        ("lin", [1], "body"),
        ("ev", {"value": 1, "colour": "red"}, "colour"),
        ("ev", {"value": 1, "ttl_s": 0}, "ttl_s"),
        ("lin", {"value": 1, "ttl_s": -1}, "ttl_s"),
        ("lin", {"value": 1, "ttl_s": "60"}, "ttl_s"),
        ("ev", {"value": 1, "ttl_s": True}, "ttl_s"),
        ("lin", {"value": 1, "ttl_s": routing.MAX_TTL_S + 1}, "ttl_s"),
        ("ev", {"value": 1, "ttl_s": 1e300}, "ttl_s"),
    ],
)
def test_bad_bodies_name_the_field(ks: str, body: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        routing.put_request(MD, ks, "k", body, OPTS)
    assert info.value.details["field"] == field


@pytest.mark.parametrize(("opts", "field"), [(Options(1, r=4), "r"), (Options(1, pw=0), "pw")])
def test_quorums_outside_the_replication_name_the_option(opts: Options, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        routing.delete_request(MD, "ev", "k", None, opts)
    assert info.value.details["field"] == field


def test_keys_and_values_have_limits() -> None:
    with pytest.raises(InvalidRequest):
        routing.get_request(MD, "ev", "", OPTS)
    with pytest.raises(TooLarge):
        routing.get_request(MD, "ev", "k" * (routing.MAX_KEY_BYTES + 1), OPTS)
    with pytest.raises(TooLarge):
        routing.put_request(MD, "ev", "k", {"value": "v" * routing.MAX_VALUE_BYTES}, OPTS)


def test_unknown_and_malformed_keyspaces() -> None:
    with pytest.raises(KeyspaceNotFound):
        routing.get_request(MD, "nope", "k", OPTS)
    with pytest.raises(InvalidRequest) as info:
        routing.get_request(MD, "bad/name", "k", OPTS)
    assert info.value.details["field"] == "keyspace"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("\ud800", "lone UTF-16 surrogate"),
        ({"n": [2**64]}, "integer is outside the range"),
        (-(2**63) - 1, "integer is outside the range"),
    ],
)
def test_a_value_json_codec_cannot_store_is_refused_naming_why(value: Any, why: str) -> None:
    """kv.json_codec writes stored values; it cannot write these (and would read a huge
    integer back as a float), so the API refuses them with a 400 naming the reason."""
    with pytest.raises(InvalidRequest, match=why) as caught:
        routing.check_value(value)
    assert str(caught.value).startswith("value: ")


def test_the_extremes_json_codec_can_store_are_accepted() -> None:
    routing.check_value({"lo": -(2**63), "hi": 2**64 - 1, "s": "é\u2028"})


def test_placement_lists_each_mode_and_replication_in_use_with_every_partition() -> None:
    groups = routing.placement(MD)
    assert [(g["mode"], g["replication"]) for g in groups] == [("eventual", 3), ("linearizable", 3)]
    for g in groups:
        assert [p["partition"] for p in g["partitions"]] == list(range(MD.partitions))
        for p in g["partitions"]:
            assert tuple(p["replicas"]) == routing.replicas(MD, g["mode"], p["partition"], 3)
            assert p["incoming"] == []


def test_placement_shows_a_moving_partition_with_its_incoming_owners_until_it_flips() -> None:
    moving, _ = membership.commit(membership.metadata(), membership.ADD4)
    assert moving.transition is not None
    mode, n, p = key = sorted(moving.transition.pending)[0]
    (group,) = routing.placement(moving)
    assert (group["mode"], group["replication"]) == (mode, n)
    old, incoming = moving.owners(mode, n, p)
    assert group["partitions"][p] == {"partition": p, "replicas": list(old), "incoming": ["n4"]}
    flipped = membership.done(moving, key)
    (group,) = routing.placement(flipped)
    new = list(moving.transition.chains[p][:n])
    assert group["partitions"][p] == {"partition": p, "replicas": new, "incoming": []}


@pytest.mark.parametrize(
    ("ttl_s", "ttl_ms"), [(1, 1000), (0.5, 500), (0.0001, 1), (routing.MAX_TTL_S, None)]
)
def test_ttl_s_becomes_whole_milliseconds_rounded_up(ttl_s: float, ttl_ms: int | None) -> None:
    for ks in ("lin", "ev"):
        put = routing.put_request(MD, ks, "k", {"value": 1, "ttl_s": ttl_s}, OPTS)
        assert put.ttl_ms == (ttl_ms or routing.MAX_TTL_S * 1000)
    assert routing.put_request(MD, "ev", "k", {"value": 1}, OPTS).ttl_ms is None


def test_a_delete_takes_no_ttl() -> None:
    with pytest.raises(InvalidRequest) as info:
        routing.delete_request(MD, "lin", "k", {"ttl_s": 5}, OPTS)
    assert info.value.details["field"] == "ttl_s"

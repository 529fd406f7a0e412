"""The Raft port's pure protocol (raft_groups/syncobj_adapter/link_codec.py): frame MACs,
the pickle without globals, splitting large flushes, the accept limits."""

from __future__ import annotations

import os
import pickle

import pytest

from kv import wire
from raft_groups.syncobj_adapter import link_codec as codec

SESSION = b"k" * 32


def test_a_sealed_frame_opens_only_with_its_session_and_sequence_number() -> None:
    sealed = codec.seal(SESSION, 7, b"data")
    assert codec.unseal(SESSION, 7, sealed) == b"data"
    for session, seq, payload in (
        (b"x" * 32, 7, sealed),  # another connection's key
        (SESSION, 8, sealed),  # replayed or reordered
        (SESSION, 7, sealed[:-1] + b"X"),  # altered
        (SESSION, 7, b""),  # truncated
    ):
        with pytest.raises(codec.Refused):
            codec.unseal(session, seq, payload)


def test_session_keys_differ_per_connection() -> None:
    hello = wire.Hello((1,), codec.CODECS, os.urandom(32), "a:1")
    auth = wire.Auth(1, codec.CODECS[0], os.urandom(32), "b:2", b"")
    other = wire.Auth(1, codec.CODECS[0], os.urandom(32), "b:2", b"")
    key = b"r" * 32
    assert codec.session_key(key, hello, auth) != codec.session_key(key, hello, other)


def test_messages_round_trip() -> None:
    messages = [
        ("g1", {"type": "append_entries", "entries": [(b"cmd", 3, 2)], "term": 2}),
        ("g2", {"type": "append_entries", "serialized": (b"chunk", True, False)}),
        ("g3", {"type": "request_vote", "ok": None, "f": 1.5, "s": {1, 2}}),
    ]
    assert codec.loads(codec.dumps(messages)) == messages


@pytest.mark.parametrize(
    "value",
    [
        [("g", os.system)],  # a global: would name a function to call
        {"not": "a list"},
        [("g",)],
        [(1, {})],
    ],
)
def test_anything_but_plain_pairs_is_refused(value: object) -> None:
    try:
        data = pickle.dumps(value, protocol=5)
    except (pickle.PicklingError, TypeError):
        pytest.skip("not picklable here")
    with pytest.raises(codec.Refused):
        codec.loads(data)


def test_a_pickle_that_would_call_a_function_is_refused_before_any_call(tmp_path: object) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.getenv, ("HOME",))

    with pytest.raises(codec.Refused, match="global"):
        codec.loads(pickle.dumps([("g", Boom())]))


def test_junk_is_refused() -> None:
    for junk in (b"", b"\x80", os.urandom(64), b"\x80\x05K\x01."):
        with pytest.raises(codec.Refused):
            codec.loads(junk)


def test_a_large_flush_is_split_in_order_and_a_single_message_is_never_split() -> None:
    messages = [(f"g{i}", {"entries": [(os.urandom(1000), i, 1)]}) for i in range(20)]
    frames, dropped = codec.frames(messages, split=5000)
    assert dropped == [] and len(frames) > 1
    assert all(len(f) <= 5000 for f in frames)
    assert [m for f in frames for m in codec.loads(f)] == messages
    big = [("g", {"entries": [(b"y" * 9000, 1, 1)]})]
    frames, dropped = codec.frames(big, split=5000)
    assert dropped == [] and [codec.loads(f) for f in frames] == [big]


def test_a_message_over_the_frame_cap_is_left_out_and_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codec, "MAX_FRAME", 2000)
    messages = [("small", {"n": 1}), ("huge", {"data": b"z" * 5000}), ("small2", {})]
    frames, dropped = codec.frames(messages, split=1000)
    assert dropped == ["huge"]
    assert [gid for f in frames for gid, _ in codec.loads(f)] == ["small", "small2"]


def test_accept_limits_per_source_and_in_all() -> None:
    limits = codec.AcceptLimits(per_source=2, total=3)
    assert limits.admit("a") and limits.admit("a")
    assert not limits.admit("a")  # per source
    assert limits.admit("b")
    assert not limits.admit("c")  # in all
    limits.release("a")
    assert limits.admit("c") and limits.waiting == 3
    for source in ("a", "b", "c"):
        limits.release(source)
    assert limits.waiting == 0

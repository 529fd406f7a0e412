"""kv/wire.py: frames, the decoder's caps and the handshake's proofs (pure; docs/internode.md).

The decoder is checked against the naive oracle "encode every frame, concatenate, cut the
bytes anywhere": whatever the cuts, the same frames come out in order (STYLE rule 7).
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kv import wire
from kv.keys import INTERNODE_AUTH, derive, internode_key
from kv.wire import Auth, Frame, FrameDecoder, FrameError, Hello, Kind

KEY = internode_key("contract-secret-0123456789abcdef")
HELLO = Hello((1,), ("json",), b"s" * 32, "n1")
AUTH = Auth(1, "json", b"c" * 32, "n2", b"")

frames = st.builds(
    Frame,
    st.sampled_from([int(k) for k in Kind]),
    st.integers(0, 2**32 - 1),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=wire.MAX_NAME),
    st.binary(max_size=300),
)


def encode(frame: Frame) -> bytes:
    return wire.encode_frame(Kind(frame.kind), frame.request_id, frame.payload, frame.name)


@given(st.lists(frames, max_size=8), st.lists(st.integers(0, 4000), max_size=10))
def test_frames_cut_anywhere_decode_to_the_same_frames(sent: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(encode(f) for f in sent)
    decoder = FrameDecoder(max_payload=1000)
    got: list[Frame] = []
    start = 0
    for cut in sorted(c for c in cuts if c <= len(stream)) + [len(stream)]:
        got.extend(decoder.feed(stream[start:cut]))
        start = cut
    assert got == sent


def test_the_header_is_twelve_bytes_in_network_order() -> None:
    raw = wire.encode_frame(Kind.REQUEST, 0x01020304, b"{}", "fetch")
    assert raw == bytes([1, 4, 5, 0, 1, 2, 3, 4, 0, 0, 0, 2]) + b"fetch{}"


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    head = wire.HEADER.pack(1, Kind.REQUEST, 0, 7, wire.HANDSHAKE_MAX_PAYLOAD + 1)
    with pytest.raises(FrameError, match="limit is 4096"):
        FrameDecoder().feed(head)  # no payload byte was sent or buffered


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ((2, Kind.REPLY, 0, 1, 0), "protocol version 2; this connection speaks 1"),
        ((1, 99, 0, 1, 0), "unknown frame kind 99"),
        ((1, Kind.REQUEST, 65, 1, 0), "operation name of 65 bytes"),
    ],
)
def test_a_broken_header_names_what_is_wrong(header: tuple[int, ...], message: str) -> None:
    with pytest.raises(FrameError, match=message):
        FrameDecoder().feed(wire.HEADER.pack(*header))


def test_the_decoder_follows_the_negotiated_version_and_cap() -> None:
    decoder = FrameDecoder()
    decoder.version, decoder.max_payload = 3, 1 << 20
    raw = wire.encode_frame(Kind.REPLY, 1, b"x" * 5000, version=3)
    assert decoder.feed(raw) == [Frame(Kind.REPLY, 1, "", b"x" * 5000)]


# ---------------------------------------------------------------------- handshake
def signed(key: bytes = KEY, hello: Hello = HELLO, auth: Auth = AUTH) -> Auth:
    return dataclasses.replace(auth, proof=wire.proof(key, "client", hello, auth))


def test_a_proof_verifies_with_the_same_key_only() -> None:
    auth = signed()
    assert wire.verify(KEY, "client", HELLO, auth, auth.proof)
    assert not wire.verify(
        internode_key("another-secret-0123456789ab"), "client", HELLO, auth, auth.proof
    )


def test_a_client_proof_is_not_a_server_proof() -> None:
    """No reflection: a server cannot pass the client's proof back as its own."""
    auth = signed()
    assert not wire.verify(KEY, "server", HELLO, auth, auth.proof)


@pytest.mark.parametrize(
    "changed",
    [
        {"hello": dataclasses.replace(HELLO, nonce=b"t" * 32)},
        {"hello": dataclasses.replace(HELLO, node="n9")},
        {"auth": dataclasses.replace(AUTH, nonce=b"d" * 32)},
        {"auth": dataclasses.replace(AUTH, node="n9")},
        {"auth": dataclasses.replace(AUTH, version=2)},
        {"auth": dataclasses.replace(AUTH, codec="msgpack")},
    ],
)
def test_a_proof_covers_nonces_ids_version_and_codec(changed: dict[str, object]) -> None:
    """A proof recorded on one connection is worthless on another (fresh nonces)."""
    auth = signed()
    hello = changed.get("hello", HELLO)
    other = changed.get("auth", auth)
    assert isinstance(hello, Hello) and isinstance(other, Auth)
    assert not wire.verify(KEY, "client", hello, other, auth.proof)


def test_hello_and_auth_round_trip_and_validate() -> None:
    auth = signed()
    assert Hello.from_wire(HELLO.to_wire()) == HELLO
    assert Auth.from_wire(auth.to_wire()) == auth
    with pytest.raises(ValueError, match="nonce must be 32 bytes"):
        Hello.from_wire({**HELLO.to_wire(), "nonce": "00"})
    with pytest.raises(ValueError, match="proof must be hex"):
        Auth.from_wire({**auth.to_wire(), "proof": "zz"})


def test_the_highest_common_version_and_our_preferred_codec_are_chosen() -> None:
    assert wire.choose_version((1, 2), (2, 3)) == 2
    assert wire.choose_codec(("msgpack", "json"), ("json", "msgpack")) == "msgpack"
    with pytest.raises(ValueError, match=r"no common internode protocol version: .*\[2\]"):
        wire.choose_version((1,), (2,))


def test_keys_are_separated_by_purpose() -> None:
    secret = "contract-secret-0123456789abcdef"
    assert internode_key(secret) == derive(secret, INTERNODE_AUTH)
    assert derive(secret, b"another purpose") != internode_key(secret)
    assert len(internode_key(secret)) == 32 and secret.encode() not in internode_key(secret)


def test_first_times_are_bounded() -> None:
    seen = wire.FirstTimes(limit=2)
    assert [seen.first(a) for a in ("a", "a", "b", "b")] == [True, False, True, False]
    assert seen.first("c") and seen.first("a")  # full: forgot the old ones

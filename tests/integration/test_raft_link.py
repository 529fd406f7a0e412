"""The Raft port's connections over real sockets (raft_groups/syncobj_adapter/link.py):
what a peer with the secret gets through, and what a stranger, a flood, junk, a forged
frame or a wrong certificate cannot (issue 11 item 3)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kv import keys, tls, wire
from raft_groups.syncobj_adapter import link_codec as codec
from raft_groups.syncobj_adapter.link import LinkSettings, RaftLink
from tests.ports import free_port

KEY = keys.raft_key("s" * 32)


def _poll(check: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s}s: {what}")
        time.sleep(0.02)


class Node:
    """A RaftLink and a thread polling it, as the driver thread does (`send` through
    `call_soon`: only the polling thread writes)."""

    def __init__(self, **overrides: Any) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        settings = LinkSettings(self.address, self.address, KEY, handshake_timeout=1.0)
        self.link = RaftLink(dataclasses.replace(settings, **overrides))
        self.received: list[tuple[str, Any]] = []
        self._stop = threading.Event()
        self._pump = threading.Thread(target=self._run, name="link-pump", daemon=True)
        self._pump.start()
        assert self.link.bound.wait(10), "the Raft port was not bound within 10 s"

    def _run(self) -> None:
        while not self._stop.is_set():
            self.link.poll(0.05)

    def send(self, to: str, frames: list[bytes]) -> None:
        self.link.call_soon(lambda: self.link.send({to: frames}))

    def close(self) -> None:
        self._stop.set()
        self.link.wake()
        self._pump.join(5)
        self.link.close()

    def events(self) -> list[tuple[str, str, Any]]:
        out = []
        while self.link.events:
            event = self.link.events.popleft()
            out.append(event)
            if event[0] == "message":
                self.received.append((event[1], event[2]))
        return out

    def connected_to(self, other: Node) -> bool:
        return any(e[:2] == ("connected", other.address) for e in self.events())

    def got(self, messages: list[Any]) -> bool:
        self.events()
        return any(m == messages for _, m in self.received)


@pytest.fixture
def nodes() -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(**overrides: Any) -> Node:
        made.append(Node(**overrides))
        return made[-1]

    yield make
    for node in made:
        node.close()


def _send(a: Node, b: Node, messages: list[Any]) -> None:
    a.send(b.address, [codec.dumps(messages)])


def _connect(a: Node, b: Node) -> None:
    a.link.add_peer(b.address)
    _poll(lambda: a.connected_to(b), f"{a.address} connected to {b.address}")


def test_messages_from_a_peer_with_the_secret_arrive_in_order(nodes: Any) -> None:
    a, b = nodes(), nodes()
    _connect(a, b)
    for i in range(50):
        _send(a, b, [("g", {"type": "append_entries", "i": i, "data": os.urandom(100)})])
    _poll(lambda: len([b.events(), b.received][1]) == 50, "50 messages")
    assert [m[0][1]["i"] for _, m in b.received] == list(range(50))
    assert {who for who, _ in b.received} == {a.address}


def test_a_peer_with_another_secret_is_refused_and_logged_once(
    nodes: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = nodes()
    stranger = nodes(key=keys.raft_key("t" * 32), retry=0.05)
    with caplog.at_level(logging.WARNING):
        stranger.link.add_peer(b.address)
        _poll(lambda: b.link.refused >= 3, "three refused handshakes")
    assert not stranger.connected_to(b)
    _send(stranger, b, [("g", {"type": "x"})])
    assert b.events() == []
    logged = [r.getMessage() for r in caplog.records if "secrets differ" in r.getMessage()]
    accepted = [m for m in logged if "connection from 127.0.0.1:" in m]
    dialled = [m for m in logged if f"connection to {b.address}" in m]
    assert len(accepted) == 1 and len(dialled) == 1, logged  # each side once


def _raw(node: Node) -> socket.socket:
    host, _, port = node.address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def _closed(sock: socket.socket, deadline_s: float = 5.0) -> bool:
    """Whether the peer closes `sock` within the deadline (reading what it sends)."""
    sock.settimeout(0.2)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def test_a_frame_announcing_a_gigabyte_is_closed_at_its_header(nodes: Any) -> None:
    b = nodes(handshake_timeout=30.0)
    sock = _raw(b)
    sock.sendall(struct.pack("!BBBxII", 1, int(wire.Kind.AUTH), 0, 0, 1 << 30) + b"x" * 100)
    assert _closed(sock, 3.0)  # long before the 30 s handshake deadline
    sock.close()


@pytest.mark.parametrize("junk", [os.urandom(4096), b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 64])
def test_junk_closes_the_connection(nodes: Any, junk: bytes) -> None:
    b = nodes(handshake_timeout=30.0)
    sock = _raw(b)
    sock.sendall(junk)
    assert _closed(sock, 3.0)
    sock.close()


def test_a_silent_connection_is_closed_at_the_handshake_deadline(nodes: Any) -> None:
    b = nodes(handshake_timeout=0.5)
    sock = _raw(b)
    assert _closed(sock, 5.0)
    sock.close()


def test_a_flood_of_unauthenticated_connections_does_not_stop_a_peer(nodes: Any) -> None:
    b = nodes(handshake_timeout=30.0, limits=codec.AcceptLimits(per_source=4, total=8))
    a = nodes()
    _connect(a, b)
    flood = [_raw(b) for _ in range(20)]
    try:
        _poll(lambda: b.link.refused >= 16, "16 connections over the cap closed at accept")
        for i in range(20):
            _send(a, b, [("g", {"i": i})])
        _poll(lambda: len([b.events(), b.received][1]) == 20, "the peer's 20 messages")
    finally:
        for sock in flood:
            sock.close()


def _handshake(node: Node, key: bytes = KEY) -> tuple[socket.socket, bytes]:
    """A hand-made client: the handshake, then the session key for frames."""
    sock = _raw(node)
    decoder = wire.FrameDecoder(1, 1 << 20)
    frames: list[wire.Frame] = []
    while not frames:
        frames += decoder.feed(sock.recv(65536))
    hello = wire.Hello.from_wire(json.loads(frames[0].payload))
    unsigned = wire.Auth(1, codec.CODECS[0], os.urandom(32), "127.0.0.1:1", b"")
    auth = dataclasses.replace(unsigned, proof=wire.proof(key, "client", hello, unsigned))
    sock.sendall(wire.encode_frame(wire.Kind.AUTH, 0, wire.json_payload(auth.to_wire())))
    frames = []
    while not frames:
        frames += decoder.feed(sock.recv(65536))
    assert frames[0].kind == wire.Kind.WELCOME
    return sock, codec.session_key(key, hello, auth)


def test_a_forged_or_replayed_frame_ends_the_connection(nodes: Any) -> None:
    b = nodes()
    sock, session = _handshake(b)
    good = codec.seal(session, 0, codec.dumps([("g", {"n": 0})]))
    sock.sendall(wire.encode_frame(wire.Kind.REQUEST, 0, good))
    _poll(lambda: b.got([("g", {"n": 0})]), "the sealed frame")
    sock.sendall(wire.encode_frame(wire.Kind.REQUEST, 0, good))  # replayed: seq 0 again
    assert _closed(sock)
    assert len(b.received) == 1


def test_a_pickle_naming_a_global_is_refused_without_running_it(nodes: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.mkdir, (str(marker),))

    b = nodes()
    sock, session = _handshake(b)
    data = pickle.dumps([("g", Exploit())])
    sock.sendall(wire.encode_frame(wire.Kind.REQUEST, 0, codec.seal(session, 0, data)))
    assert _closed(sock)
    assert not marker.exists() and b.events() == []


# ---------------------------------------------------------------------- TLS
def _tls_files(tmp_path: Path, ca: keys.Pem, name: str) -> tls.TlsFiles:
    pem = keys.make_node_cert(ca, name, ("127.0.0.1", "localhost"))
    paths = {}
    for part, data in (("cert", pem.cert), ("key", pem.key), ("ca", ca.cert)):
        path = tmp_path / f"{name}-{part}.pem"
        path.write_bytes(data)
        paths[part] = str(path)
    return tls.TlsFiles(**paths)


def _tls(files: tls.TlsFiles) -> dict[str, Any]:
    return {
        "server_tls": tls.server_context(files, peers_only=True),
        "client_tls": tls.client_context(files.ca, files),
    }


def test_mutual_tls_links_nodes_of_one_ca_only(nodes: Any, tmp_path: Path) -> None:
    ca, other_ca = keys.make_ca(), keys.make_ca("another CA")
    a = nodes(**_tls(_tls_files(tmp_path, ca, "a")))
    b = nodes(**_tls(_tls_files(tmp_path, ca, "b")))
    _connect(a, b)
    _send(a, b, [("g", {"secret value": "plain"})])
    _poll(lambda: b.got([("g", {"secret value": "plain"})]), "a message over TLS")
    # a node whose certificate another CA signed: refused by b, even with the secret
    c = nodes(retry=0.05, **_tls(_tls_files(tmp_path, other_ca, "c")))
    refused_before = b.link.refused
    c.link.add_peer(b.address)
    _poll(lambda: c.link.refused >= 2, "c's dials fail")
    assert not c.connected_to(b)
    _poll(lambda: b.link.refused > refused_before, "b counts the failed TLS handshakes too")
    # plain TCP to a TLS port gets no HELLO
    sock = _raw(b)
    sock.sendall(b"\x01\x02\x00\x00" + b"\x00" * 60)
    assert _closed(sock)
    sock.close()


def test_tls_client_without_a_certificate_is_refused(nodes: Any, tmp_path: Path) -> None:
    ca = keys.make_ca()
    files = _tls_files(tmp_path, ca, "b")
    b = nodes(**_tls(files))
    host, _, port = b.address.rpartition(":")
    ctx = tls.client_context(files.ca)  # trusts the CA, presents no certificate
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as sock:
            with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                sock.recv(1)
                sock.sendall(b"x" * 100)
                sock.recv(1)


def test_a_closed_link_closes_its_port(nodes: Any) -> None:
    node = Node()
    node.close()
    with pytest.raises(ConnectionRefusedError):
        _raw(node)

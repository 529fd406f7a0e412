"""The HTTP server limits of a real node over real sockets (kv/http/limits.py, issue 11
item 7): a slow head or body is cut off, connections over the cap are refused while the
held ones keep working, an idle keep-alive connection is closed, and internode links are
neither counted nor timed out once upgraded.

No timing is asserted: every wait is a poll with a deadline far above the configured
limits (a loaded machine only makes the waits longer).
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    POLL_INTERVAL_S,
    NodeThread,
    Reply,
    api_of,
    create_keyspace,
    error_of,
    founder_configs,
    running,
    single_node_config,
)

DEADLINE_S = 30.0  # for the server to act on a limit of at most a second or two


@pytest.fixture
def limited(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NodeThread]:
    """A single node whose limits are the test's `settings` marker (NodeConfig fields)."""
    settings: dict[str, Any] = request.node.get_closest_marker("settings").kwargs
    config = replace(single_node_config(tmp_path / "n1"), **settings)
    with running([config]) as nodes:
        yield nodes["n1"]


def _address(node: NodeThread) -> tuple[str, int]:
    host, _, port = node.config.advertise.rpartition(":")
    return host, int(port)


def _connect(node: NodeThread, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(_address(node), timeout=DEADLINE_S, source_address=(source, 0))
    sock.settimeout(POLL_INTERVAL_S)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (EOF or reset), reading and dropping any reply."""
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _wait_closed(sock: socket.socket, trickle: bytes = b"") -> None:
    """Poll until the server closes `sock`, sending `trickle` (one byte at a time) meanwhile."""
    end = time.monotonic() + DEADLINE_S
    for i in range(1_000_000):
        if _closed_by_server(sock):
            return
        assert time.monotonic() < end, "the server kept the connection open"
        if trickle:
            try:
                sock.sendall(trickle[i % len(trickle) : i % len(trickle) + 1])
            except (BrokenPipeError, ConnectionResetError):
                return


def _health(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/v1/health")
    response = conn.getresponse()
    response.read()
    return response.status


@pytest.mark.settings(header_timeout_s=0.5, keepalive_timeout_s=600.0)
def test_a_head_trickled_byte_by_byte_is_cut_off(limited: NodeThread) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        _wait_closed(sock, trickle=b"X-Slow: a\r\n")  # never ends the head
    assert limited.node._server is not None
    assert limited.node._server.connections()["header_timeouts"] >= 1


@pytest.mark.settings(header_timeout_s=0.5, keepalive_timeout_s=600.0)
def test_a_connection_that_sends_nothing_is_closed(limited: NodeThread) -> None:
    with _connect(limited) as sock:
        _wait_closed(sock)


@pytest.mark.settings(body_timeout_s=0.5)
def test_a_body_that_does_not_arrive_in_time_gets_408(limited: NodeThread) -> None:
    with _connect(limited) as sock:
        sock.sendall(
            b"PUT /v1/keyspaces/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        reply = _read_reply(sock, trickle=b" ")  # a byte now and then, never the whole body
    assert reply.status == 408, reply
    assert error_of(reply)["code"] == "request_timeout"


@pytest.mark.settings(max_connections=6, header_timeout_s=600.0, keepalive_timeout_s=600.0)
def test_connections_over_the_cap_are_refused_and_held_ones_keep_working(
    limited: NodeThread,
) -> None:
    host, port = _address(limited)
    client = http.client.HTTPConnection(host, port, timeout=DEADLINE_S)  # keep-alive
    assert _health(client) == 200
    idle = [_connect(limited) for _ in range(5)]  # the cap is full
    try:
        _wait_until(lambda: _open(limited) == 6)
        with _connect(limited) as over:
            _wait_closed(over)
        for _ in range(3):
            assert _health(client) == 200  # the held connection is served as before
    finally:
        for sock in idle:
            sock.close()
        client.close()
    _wait_until(lambda: _open(limited) == 0)
    assert api_of(limited).get("/v1/health").status == 200
    assert limited.node._server is not None
    assert limited.node._server.connections()["refused"] >= 1


@pytest.mark.settings(max_connections_per_source=3, header_timeout_s=600.0)
def test_one_address_cannot_take_every_connection(limited: NodeThread) -> None:
    hog = [_connect(limited, "127.0.0.2") for _ in range(3)]
    try:
        _wait_until(lambda: _open(limited) == 3)
        with _connect(limited, "127.0.0.2") as over:
            _wait_closed(over)
        assert api_of(limited).get("/v1/health").status == 200  # from 127.0.0.1
    finally:
        for sock in hog:
            sock.close()


@pytest.mark.settings(keepalive_timeout_s=0.5)
def test_an_idle_keep_alive_connection_is_closed(limited: NodeThread) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = _read_reply(sock)
        assert reply.status == 200 and reply.headers.get("connection") != "close", reply
        _wait_closed(sock)


def _read_reply(sock: socket.socket, trickle: bytes = b"") -> Reply:
    """One HTTP reply read from `sock` (with Content-Length), sending `trickle` while none
    comes."""
    raw = b""
    end = time.monotonic() + DEADLINE_S
    while True:
        head, sep, body = raw.partition(b"\r\n\r\n")
        if sep:
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
            }
            if len(body) >= int(headers.get("content-length", "0")):
                return Reply(int(lines[0].split()[1]), headers, body)
        assert time.monotonic() < end, raw
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if trickle:
                sock.sendall(trickle)
            continue
        assert chunk, f"closed without a whole reply after {raw!r}"
        raw += chunk


def test_internode_links_outlive_the_http_timeouts_and_hold_no_slot(tmp_path: Path) -> None:
    """Two nodes whose HTTP timeouts are far shorter than the window watched: the links
    between them (gossip and the writes below run over them) are opened once and not
    again, and hold no connection slot."""
    settings = {"header_timeout_s": 0.2, "keepalive_timeout_s": 0.2, "max_connections": 4}
    with running(founder_configs(tmp_path, 2, **settings)) as nodes:
        opened = {name: [0] for name in nodes}
        for name, node in nodes.items():
            _count_links(node, opened[name])
        create_keyspace(api_of(nodes["n1"]), "ev", _eventual(2))
        _wait_until(lambda: all(_open(n) == 0 for n in nodes.values()))
        baseline = {name: count[0] for name, count in opened.items()}
        host, port = _address(nodes["n1"])
        client = http.client.HTTPConnection(host, port, timeout=DEADLINE_S)
        try:
            window = time.monotonic() + 10 * 0.2
            for i in range(1_000_000):  # an observation window, not a timing assertion
                if time.monotonic() > window:
                    break
                client.request("PUT", f"/v1/keyspaces/ev/keys/k{i}", b'{"value": 1}')
                response = client.getresponse()
                assert response.status == 200, response.read()  # w=2: n2 through a link
                response.read()
                time.sleep(POLL_INTERVAL_S)
            assert _open(nodes["n2"]) == 0 and _open(nodes["n1"]) == 1  # only the client
        finally:
            client.close()
        assert {name: count[0] for name, count in opened.items()} == baseline


def _count_links(node: NodeThread, count: list[int]) -> None:
    """Count the internode links that authenticate to `node` from now on."""
    before = node.node.internode.on_authenticated

    def counted(peer: str) -> None:
        count[0] += 1
        before(peer)

    node.node.internode.on_authenticated = counted


def _eventual(replication: int) -> dict[str, Any]:
    return {"consistency": "eventual", "replication": replication, "write_quorum": replication}


def _open(node: NodeThread) -> int:
    assert node.node._server is not None
    return node.node._server.connections()["open"]


def _wait_until(condition: Any) -> None:
    end = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(POLL_INTERVAL_S)

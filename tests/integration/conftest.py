"""A real single-node kv Node, in-process, for the integration tier (DESIGN.md §7).

The node (LevelDB on a tmp dir, the meta Raft group on a loopback port, the aiohttp API)
runs on its own asyncio loop in a background thread; tests talk to it over real HTTP with
`http.client`, which sends paths byte for byte (no client-side normalisation), so tests
control exactly what the server parses. The only waits are fixture polls with a deadline:
`GET /v1/health` at start-up, and the Raft groups of the linearizable keyspace `lin_ks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from kv import auth
from kv.config import NodeConfig
from kv.meta import Member
from kv.node import Node
from tests.ports import free_port

START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0
POLL_INTERVAL_S = 0.05
_NO_BODY = object()


def key_path(ks: str, key: str) -> str:
    """`/v1/keyspaces/{ks}/keys/{key}` with the key percent-encoded as UTF-8 (DESIGN.md §5)."""
    return f"/v1/keyspaces/{quote(ks, safe='')}/keys/{quote(key, safe='')}"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:  # bodies can be megabytes: show the start only
        return (
            f"Reply(HTTP {self.status} {self.body[:500]!r}{'...' if len(self.body) > 500 else ''})"
        )

    __str__ = __repr__


class Api:
    """A minimal HTTP client: one fresh connection per request, raw paths, raw bodies."""

    def __init__(self, host: str, port: int, secret: str, ca: str | None = None) -> None:
        self.host = host
        self.port = port
        self.secret = secret
        self.tls = ssl.create_default_context(cafile=ca) if ca else None  # https
        self.base_url = f"{'https' if ca else 'http'}://{host}:{port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        json_body: Any = _NO_BODY,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        hdrs = dict(headers or {})
        if json_body is not _NO_BODY:
            body = json.dumps(json_body).encode()
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        conn = (
            http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.tls)
            if self.tls
            else http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        )
        try:
            # http.client adds only Host; the path goes out exactly as given.
            conn.putrequest(method, path, skip_accept_encoding=True)
            hdrs.setdefault("Content-Length", str(len(body) if body is not None else 0))
            for name, value in hdrs.items():
                conn.putheader(name, value)
            conn.endheaders()
            if body:
                conn.send(body)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def put(self, path: str, json_body: Any = _NO_BODY, **kw: Any) -> Reply:
        return self.request("PUT", path, json_body=json_body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)

    def healthy(self) -> bool:
        try:
            return self.get("/v1/health", timeout=2.0).status == 200
        except (OSError, http.client.HTTPException):
            return False


class NodeThread:
    """One `kv.node.Node` on an asyncio loop running in a background thread."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.node = Node(config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"kv-{config.node_id}", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self.node.start(), self.loop)
        try:
            fut.result(timeout=START_DEADLINE_S)
        except TimeoutError:  # name what the start waits on
            raise TimeoutError(f"node start hung: {self._pending()}") from None

    def _pending(self) -> str:
        """The loop's unfinished tasks, each with its await chain (a diagnosis only:
        read from another thread)."""
        lines = []
        for task in list(asyncio.all_tasks(self.loop)):
            chain: list[str] = []
            coro: Any = task.get_coro()
            while coro is not None:  # down the await chain to the innermost coroutine
                frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                if frame is not None:
                    chain.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
                coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
            lines.append(" > ".join(chain) or repr(task))
        return "; ".join(lines)

    def stop(self) -> None:
        """Stop the node, the loop and the thread; safe after a partial or failed start."""
        try:
            if self.loop.is_running():
                fut = asyncio.run_coroutine_threadsafe(self.node.stop(), self.loop)
                try:
                    fut.result(timeout=STOP_DEADLINE_S)
                except TimeoutError:  # name what the stop waits on
                    raise TimeoutError(f"node stop hung: {self._pending()}") from None
        finally:
            if self._thread.is_alive():
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout=STOP_DEADLINE_S)
            if self._thread.is_alive():
                raise RuntimeError(f"node thread still running after {STOP_DEADLINE_S}s")
            self.loop.close()


def single_node_config(data_dir: Path) -> NodeConfig:
    http_addr = f"127.0.0.1:{free_port()}"
    raft_addr = f"127.0.0.1:{free_port()}"
    return NodeConfig(
        node_id="n1",
        data_dir=str(data_dir),
        listen=http_addr,
        advertise=http_addr,
        raft_listen=raft_addr,
        raft_advertise=raft_addr,
        cluster_secret=secrets.token_hex(16),  # 32 characters
        initial_cluster=(Member(id="n1", http=http_addr, raft=raft_addr),),
    )


def founder_configs(root: Path, count: int, **settings: Any) -> list[NodeConfig]:
    """Configs of `count` founders n1..n<count> on loopback ports the OS gave, one secret;
    `settings` are NodeConfig fields for all of them."""
    secret = secrets.token_hex(16)
    ids = [f"n{i}" for i in range(1, count + 1)]
    addrs = {n: (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}") for n in ids}
    members = tuple(Member(id=n, http=h, raft=r) for n, (h, r) in addrs.items())
    return [
        NodeConfig(
            node_id=n,
            data_dir=str(root / n),
            listen=h,
            advertise=h,
            raft_listen=r,
            raft_advertise=r,
            cluster_secret=secret,
            initial_cluster=members,
            **settings,
        )
        for n, (h, r) in addrs.items()
    ]


def api_of(node: NodeThread) -> Api:
    """The node's API at its listen address (https with the CA when it has TLS)."""
    host, _, port = node.config.listen.rpartition(":")
    return Api(host, int(port), node.config.cluster_secret, node.config.tls_ca or None)


def stop_all(nodes: Iterable[NodeThread]) -> None:
    """Stop every node, even if one fails to; then report the failures."""
    errors = []
    for node in nodes:
        try:
            node.stop()
        except Exception as exc:
            errors.append(exc)
    if errors:  # pytest.fail keeps the whole text (an assert's message is cut short)
        pytest.fail("\n".join(f"{type(e).__name__}: {e}" for e in errors))


@contextlib.contextmanager
def running(configs: Iterable[NodeConfig]) -> Iterator[dict[str, NodeThread]]:
    """Start in-process nodes, wait until each answers /v1/health, and stop every one of
    them on the way out, also on failure."""
    nodes = {c.node_id: NodeThread(c) for c in configs}
    try:
        for node in nodes.values():
            node.start()
        for node in nodes.values():
            wait_healthy(api_of(node), START_DEADLINE_S)
        yield nodes
    finally:
        stop_all(nodes.values())


@contextlib.contextmanager
def auth_node(root: Path) -> Iterator[tuple[Api, str]]:
    """A bootstrapped single node with auth on (kv/auth.py): its API and the admin token
    it bootstrapped from `admin_token_file` (mode 600); stopped on exit."""
    admin = auth.mint("admin", "admin", None)[0]
    token_file = root / "admin.token"
    token_file.write_text(admin)
    token_file.chmod(0o600)
    config = replace(single_node_config(root / "n1"), auth=True, admin_token_file=str(token_file))
    host, _, port = config.advertise.rpartition(":")
    api = Api(host, int(port), config.cluster_secret)
    runner = NodeThread(config)
    try:
        runner.start()
        wait_healthy(api, START_DEADLINE_S)
        yield api, admin
    finally:
        runner.stop()


def create_keyspace(api: Api, name: str, config: dict[str, Any]) -> None:
    """PUT a keyspace, again while the answer is a retryable 503 (a meta election on a
    loaded machine; the API's contract is that a 503 may be retried), until a deadline."""
    reply = retry_503(
        lambda: api.put(f"/v1/keyspaces/{name}", config, timeout=10.0), START_DEADLINE_S
    )
    assert reply.status in (200, 201), (name, reply)


def poll(probe: Callable[[], Any], what: str, deadline_s: float) -> Any:
    """`probe()` again every POLL_INTERVAL_S until it returns something truthy, which is
    returned; fails naming `what` after `deadline_s`."""
    end = time.monotonic() + deadline_s
    while not (found := probe()):
        assert time.monotonic() < end, f"not within {deadline_s}s: {what}"
        time.sleep(POLL_INTERVAL_S)
    return found


def retry_503(call: Callable[[], Any], deadline_s: float) -> Any:
    """The request again while it is a retryable 503 (an election, a partition being
    migrated); after `deadline_s` the last reply, for the caller's assertion to show."""
    end = time.monotonic() + deadline_s
    while (reply := call()).status == 503 and time.monotonic() < end:
        time.sleep(POLL_INTERVAL_S)
    return reply


def wait_groups_led(api: Api) -> None:
    """Every Raft group this node hosts has a leader (a poll with a deadline)."""
    end = time.monotonic() + START_DEADLINE_S
    while True:
        groups = api.get("/v1/cluster").json().get("raft_groups", {})
        if groups and all(g["leader"] for g in groups.values()):
            return
        assert time.monotonic() < end, f"groups not led on {api.base_url}: {groups}"
        time.sleep(POLL_INTERVAL_S)


def wait_healthy(api: Api, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while not api.healthy():
        if time.monotonic() > end:
            raise AssertionError(f"node at {api.base_url} not healthy after {deadline_s}s")
        time.sleep(POLL_INTERVAL_S)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeThread]:
    """A bootstrapped single-node cluster (n1), one per test module (isolation, ~1 s each)."""
    runner = NodeThread(single_node_config(tmp_path_factory.mktemp("n1")))
    try:
        runner.start()
        host, _, port = runner.config.advertise.rpartition(":")
        wait_healthy(Api(host, int(port), runner.config.cluster_secret), START_DEADLINE_S)
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="module")
def api(node: NodeThread) -> Api:
    host, _, port = node.config.advertise.rpartition(":")
    return Api(host, int(port), node.config.cluster_secret)


@pytest.fixture(scope="module")
def base_url(api: Api) -> str:
    return api.base_url


@pytest.fixture(scope="module")
def lin_ks(api: Api) -> str:
    return linearizable_keyspace(api)


def linearizable_keyspace(api: Api) -> str:
    """A linearizable keyspace `lin` (replication 1) whose Raft groups serve. The groups
    start after the metadata change commits (raft_groups/manager.py `reconcile`): wait, with
    a deadline, until /v1/cluster lists one group per partition, each with a leader."""
    reply = api.put("/v1/keyspaces/lin", {"consistency": "linearizable", "replication": 1})
    assert reply.status in (200, 201), reply
    end = time.monotonic() + START_DEADLINE_S
    while True:
        info = api.get("/v1/cluster").json()
        groups = info.get("raft_groups", {})
        if len(groups) >= len(info["partitions"]) and all(g["leader"] for g in groups.values()):
            return "lin"
        assert time.monotonic() < end, f"linearizable groups not ready: {groups}"
        time.sleep(POLL_INTERVAL_S)


# ------------------------------------------------------------------ the error shape (§5)
ERROR_CODE_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (RFC 8259)")


def strict_json(raw: bytes) -> Any:
    """Parse a reply body as RFC 8259 JSON: NaN/Infinity (Python extensions) are rejected."""
    return json.loads(raw, parse_constant=_reject_constant)


def error_of(reply: Reply) -> dict[str, Any]:
    """Assert `{"error": {"code": "<snake_case>", "message": "...", ...details}}` (DESIGN.md §5)
    served as application/json, and return the inner object."""
    assert reply.headers.get("content-type", "").startswith("application/json"), reply
    body = strict_json(reply.body)
    assert isinstance(body, dict) and set(body) == {"error"}, reply
    err = body["error"]
    assert isinstance(err, dict), reply
    assert isinstance(err.get("code"), str) and ERROR_CODE_RE.match(err["code"]), reply
    assert isinstance(err.get("message"), str) and err["message"], reply
    return err

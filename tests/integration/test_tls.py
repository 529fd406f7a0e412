"""TLS on every link (issue 11 item 2): the API port speaks HTTPS only, checked against the
cluster CA; the internode protocol (on the API port) and the Raft port are encrypted, so
what a tap between nodes records holds no secret, no token and no value.

The tap: every node advertises its HTTP and Raft addresses at a recording TCP proxy in
front of its real ports, so each byte one node sends another passes through it. The same
cluster without TLS is the control: there the tap does see the values.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kv import auth, keys
from kv.client import SyncClient
from kv.config import NodeConfig
from kv.errors import KvError
from kv.meta import Member
from tests.integration.conftest import founder_configs, running, single_node_config
from tests.ports import free_port

MARKER = "plaintext-marker-7f3a9c"


class Tap:
    """A TCP proxy on a loopback port that records every byte it forwards, both ways."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.address = f"127.0.0.1:{free_port()}"
        self.captured = bytearray()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tap", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the tap did not listen"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        port = int(self.address.rpartition(":")[2])
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._pipe, "127.0.0.1", port)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._copy(reader, up_writer), self._copy(up_reader, writer))

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                with self._lock:
                    self.captured += data
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def bytes(self) -> bytes:
        with self._lock:
            return bytes(self.captured)

    def close(self) -> None:
        def stop() -> None:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_later(0.05, self._loop.stop)

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(10)


def _tls_files(root: Path, ca: keys.Pem, name: str) -> dict[str, str]:
    pem = keys.make_node_cert(ca, name, ("127.0.0.1", "localhost"))
    files = {"tls_cert": root / f"{name}.pem", "tls_key": root / f"{name}.key"}
    files["tls_cert"].write_bytes(pem.cert)
    files["tls_key"].write_bytes(pem.key)
    files["tls_key"].chmod(0o600)
    ca_path = root / "ca.pem"
    ca_path.write_bytes(ca.cert)
    return {**{k: str(v) for k, v in files.items()}, "tls_ca": str(ca_path)}


@contextlib.contextmanager
def tapped(configs: list[NodeConfig]) -> Iterator[tuple[list[NodeConfig], list[Tap]]]:
    """The configs with every advertised address moved to a tap in front of the real port."""
    taps = {}
    for c in configs:
        taps[c.advertise] = Tap(c.listen)
        taps[c.raft_advertise] = Tap(c.raft_listen)
    members = tuple(
        Member(id=m.id, http=taps[m.http].address, raft=taps[m.raft].address)
        for m in configs[0].initial_cluster
    )
    try:
        yield (
            [
                replace(
                    c,
                    advertise=taps[c.advertise].address,
                    raft_advertise=taps[c.raft_advertise].address,
                    initial_cluster=members,
                )
                for c in configs
            ],
            list(taps.values()),
        )
    finally:
        for tap in taps.values():
            tap.close()


def _secure(root: Path, configs: list[NodeConfig]) -> tuple[list[NodeConfig], str, str]:
    """The configs with TLS (one CA) and auth (a bootstrap admin token)."""
    ca = keys.make_ca()
    admin = auth.mint("admin", "admin", None)[0]
    token_file = root / "admin.token"
    token_file.write_text(admin)
    token_file.chmod(0o600)
    secured = [
        replace(c, auth=True, admin_token_file=str(token_file), **_tls_files(root, ca, c.node_id))
        for c in configs
    ]
    return secured, str(root / "ca.pem"), admin


def _traffic(client: SyncClient, nodes: list[str]) -> None:
    """Writes and reads of MARKER values in both modes through every node."""
    client.create_keyspace("tapped_lin", consistency="linearizable", replication=3)
    client.create_keyspace("tapped_ev", consistency="eventual", replication=3)
    for i, node in enumerate(nodes):
        for ks in ("tapped_lin", "tapped_ev"):
            client.put(ks, f"k{i}", {"v": f"{MARKER}-{i}"}, node=node)
    for node in nodes:
        for ks in ("tapped_lin", "tapped_ev"):
            assert MARKER in str(client.get(ks, "k0", node=node))


@pytest.mark.parametrize("secure", [True, False], ids=["tls", "control-without-tls"])
def test_a_tap_between_nodes_sees_no_secret_token_or_value(tmp_path: Path, secure: bool) -> None:
    configs = founder_configs(tmp_path, 3)
    ca, token = None, None
    if secure:
        configs, ca, token = _secure(tmp_path, configs)
    with tapped(configs) as (tapped_configs, taps), running(tapped_configs) as nodes:
        listen = [n.config.listen for n in nodes.values()]
        with SyncClient(listen, token=token, ca=ca, timeout=20.0) as client:
            _traffic(client, listen)
        captured = b"".join(tap.bytes() for tap in taps)
    assert len(captured) > 10_000, "the tap recorded the cluster's traffic"
    if not secure:
        assert MARKER.encode() in captured  # the control: a tap does see plaintext
        return
    assert MARKER.encode() not in captured
    assert configs[0].cluster_secret.encode() not in captured
    assert token is not None and token.encode() not in captured
    assert b"tapped_lin" not in captured and b"tapped_ev" not in captured


@pytest.fixture
def tls_node(tmp_path: Path) -> Iterator[tuple[NodeConfig, str, str]]:
    [config], ca, admin = _secure(tmp_path, [single_node_config(tmp_path / "n1")])
    with running([config]):
        yield config, ca, admin


def test_the_api_speaks_https_only(tls_node: tuple[NodeConfig, str, str]) -> None:
    config, ca, admin = tls_node
    host, _, port = config.listen.rpartition(":")
    plain = http.client.HTTPConnection(host, int(port), timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        plain.request("GET", "/v1/health")
        plain.getresponse()
    plain.close()
    secure = http.client.HTTPSConnection(
        host, int(port), timeout=5, context=ssl.create_default_context(cafile=ca)
    )
    secure.request("GET", "/v1/health")
    assert secure.getresponse().status == 200
    secure.close()
    untrusting = http.client.HTTPSConnection(
        host, int(port), timeout=5, context=ssl.create_default_context()
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.request("GET", "/v1/health")
    untrusting.close()
    with SyncClient([config.listen], token=admin, ca=ca) as client:
        client.create_keyspace("tls_ev", consistency="eventual", replication=1)
        client.put("tls_ev", "k", "v")
        assert client.get("tls_ev", "k")["value"] == "v"
    with SyncClient([config.listen], token=admin, retries=0) as plain_client:  # no CA: http
        with pytest.raises(KvError):
            plain_client.list_keyspaces()


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed (apt-get install curl)"
)
def test_curl_with_the_ca_and_the_token_as_the_readme_shows(
    tls_node: tuple[NodeConfig, str, str],
) -> None:
    config, ca, admin = tls_node
    url = f"https://{config.listen}/v1/keyspaces"
    ok = subprocess.run(
        ["curl", "-s", "--cacert", ca, "-H", f"Authorization: Bearer {admin}", url],
        capture_output=True,
        timeout=30,
    )
    assert ok.returncode == 0 and b'"keyspaces"' in ok.stdout
    plain = subprocess.run(["curl", "-s", f"http://{config.listen}/v1/keyspaces"], timeout=30)
    assert plain.returncode != 0

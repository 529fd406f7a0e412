"""What a node checks before it starts (kv/startup.py, issue 11 items 8 and 9): ports
free, the data directory its own (this node, this cluster), created 0700."""

from __future__ import annotations

import json
import os
import socket
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from kv import keys, startup
from kv.config import ConfigError, NodeConfig
from kv.meta import Member
from tests.ports import free_port

SECRET = "0123456789abcdef"


def config(tmp_path: Path, node_id: str = "n1", secret: str = SECRET) -> NodeConfig:
    http, raft = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    return NodeConfig(
        node_id,
        str(tmp_path / "data"),
        http,
        http,
        raft,
        raft,
        secret,
        initial_cluster=(Member(node_id, http, raft),),
    )


def test_a_new_data_dir_is_created_0700_with_its_identity(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    startup.prepare_data_dir(cfg)
    assert stat.S_IMODE(os.stat(cfg.data_dir).st_mode) == 0o700
    identity = json.loads((Path(cfg.data_dir) / startup.IDENTITY).read_text())
    assert identity["node_id"] == "n1" and SECRET not in json.dumps(identity)
    startup.prepare_data_dir(cfg)  # the same node again: fine


def test_a_data_dir_of_another_node_is_refused(tmp_path: Path) -> None:
    startup.prepare_data_dir(config(tmp_path, "n2"))
    with pytest.raises(ConfigError, match="belongs to node 'n2', not 'n1'") as caught:
        startup.prepare_data_dir(config(tmp_path, "n1"))
    assert str(caught.value).startswith("data_dir: ")


def test_a_data_dir_of_another_cluster_is_refused(tmp_path: Path) -> None:
    startup.prepare_data_dir(config(tmp_path))
    with pytest.raises(ConfigError, match="another cluster"):
        startup.prepare_data_dir(config(tmp_path, secret="another-secret-16ch"))


def test_a_data_dir_without_identity_is_adopted(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    os.makedirs(Path(cfg.data_dir) / "raft")  # made by a release without node.json
    startup.prepare_data_dir(cfg)
    assert (Path(cfg.data_dir) / startup.IDENTITY).exists()


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    startup.check_ports(cfg)
    host, _, port = cfg.raft_listen.rpartition(":")
    with socket.create_server((host, int(port))):
        with pytest.raises(ConfigError, match=f"raft_listen: cannot bind {cfg.raft_listen}"):
            startup.check_ports(cfg)


def _tls_config(tmp_path: Path, key_mode: int = 0o600, other_ca: bool = False) -> NodeConfig:
    ca = keys.make_ca()
    pem = keys.make_node_cert(keys.make_ca() if other_ca else ca, "n1", ("127.0.0.1",))
    files = {"tls_cert": pem.cert, "tls_key": pem.key, "tls_ca": ca.cert}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "tls_key").chmod(key_mode)
    paths = {name: str(tmp_path / name) for name in files}
    return replace(config(tmp_path), **paths)


def test_tls_files_that_load_pass(tmp_path: Path) -> None:
    startup.check_tls(_tls_config(tmp_path))


def test_a_tls_key_others_can_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^tls_key: .* can be read by group or others"):
        startup.check_tls(_tls_config(tmp_path, key_mode=0o644))


def test_a_missing_tls_file_is_named(tmp_path: Path) -> None:
    cfg = replace(_tls_config(tmp_path), tls_cert=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match=r"^tls_cert: .*nope\.pem"):
        startup.check_tls(cfg)

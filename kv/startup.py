"""Checks a node makes before anything starts (issue 11 items 8 and 9): each failure is a
`ConfigError`, which `python -m kv node` prints as one line and exits 2.

- **Ports.** `listen` and `raft_listen` must be free: a port in use fails at once, naming
  the setting and the port, instead of a node that half starts (the Raft port was bound
  in the background, retried every half second for ever).
- **Data directory.** Created mode 0700 (it holds the cluster's data and Raft journals).
  `node.json` in it records the node id and the cluster (`keys.cluster_fingerprint`, from
  the secret, revealing nothing of it); a directory of another node or another cluster is
  refused, so a mistyped `--data-dir` or `--node-id` cannot make one node speak with
  another's journals. A directory without `node.json` (older releases, or new) is adopted.
- **Admin token file** (a founder's bootstrap token, kv/auth.py): mode 600, well formed.
- **TLS files** (kv/tls.py): the key mode 600; certificate, key and CA load and match.
"""

from __future__ import annotations

import json
import os
import socket
import ssl

from kv import auth, tls
from kv.config import ConfigError, NodeConfig
from kv.config_load import read_secret_file
from kv.files import write_durably
from kv.keys import cluster_fingerprint

IDENTITY = "node.json"


def check_ports(cfg: NodeConfig) -> None:
    for name in ("listen", "raft_listen"):
        address = getattr(cfg, name)
        host, _, port = address.rpartition(":")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.create_server((host.strip("[]"), int(port)), family=family):
                pass
        except OSError as exc:
            raise ConfigError(f"{name}: cannot bind {address}: {exc.strerror or exc}") from None


def check_admin_token(cfg: NodeConfig) -> None:
    """A founder's bootstrap admin token file: mode 600 and a token kv/auth.py accepts."""
    if not cfg.admin_token_file:
        return
    token = read_secret_file(cfg.admin_token_file, "admin_token_file")
    try:
        auth.record(token, "admin", "admin", None)
    except ValueError as exc:
        raise ConfigError(f"admin_token_file: {cfg.admin_token_file}: {exc}") from None


def check_tls(cfg: NodeConfig) -> None:
    files = cfg.tls
    if files is None:
        return
    read_secret_file(files.key, "tls_key")  # its mode: the key is the node's identity
    try:
        tls.server_context(files, peers_only=True)
        tls.client_context(files.ca, files)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_cert: {files.cert} / tls_key / tls_ca {files.ca}: {exc}") from None


def prepare_data_dir(cfg: NodeConfig) -> None:
    os.makedirs(cfg.data_dir, mode=0o700, exist_ok=True)
    path = os.path.join(cfg.data_dir, IDENTITY)
    mine = {"node_id": cfg.node_id, "cluster": cluster_fingerprint(cfg.cluster_secret)}
    try:
        with open(path) as f:
            found = json.load(f)
    except FileNotFoundError:
        write_durably(path, json.dumps(mine).encode(), mode=0o600)
        return
    except ValueError as exc:
        raise ConfigError(f"data_dir: {path} is not JSON ({exc})") from None
    if not isinstance(found, dict):
        raise ConfigError(f"data_dir: {path} is not a JSON object")
    if found.get("node_id") != cfg.node_id:
        raise ConfigError(
            f"data_dir: {cfg.data_dir} belongs to node {found.get('node_id')!r}, not "
            f"{cfg.node_id!r} ({path}); give each node its own data directory"
        )
    if found.get("cluster") != mine["cluster"]:
        raise ConfigError(
            f"data_dir: {cfg.data_dir} belongs to another cluster (made with another cluster "
            f"secret; {path}); use the secret it was made with, or a new directory"
        )

"""`python -m kv node --config node.toml [flags]` — run one node until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

from kv import config as config_mod
from kv import config_load, startup
from kv.node import Node


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kv")
    sub = p.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="run one node (see kv/config.py for the TOML keys)")
    node.add_argument("--config", help="TOML file; flags override its values")
    node.add_argument("--node-id", dest="node_id")
    node.add_argument("--data-dir", dest="data_dir")
    node.add_argument("--listen", help="HTTP bind host:port")
    node.add_argument("--advertise", help="HTTP address peers and clients dial (default: --listen)")
    node.add_argument("--raft-listen", dest="raft_listen", help="meta Raft bind host:port")
    node.add_argument("--raft-advertise", dest="raft_advertise")
    node.add_argument(
        "--initial-cluster",
        dest="initial_cluster",
        help="founding members: ID=HOST:HTTP_PORT/HOST:RAFT_PORT,... (a founder)",
    )
    node.add_argument(
        "--seeds",
        help="HTTP addresses of live members: HOST:PORT,... (a node joining a running cluster)",
    )
    node.add_argument("--cluster-secret-file", dest="cluster_secret_file")
    node.add_argument(
        "--auth", action="store_true", default=None, help="require client tokens (kv/auth.py)"
    )
    node.add_argument(
        "--admin-token-file", dest="admin_token_file", help="a founder's bootstrap admin token"
    )
    node.add_argument("--tls-cert", dest="tls_cert", help="this node's certificate (PEM)")
    node.add_argument("--tls-key", dest="tls_key", help="its private key (PEM, mode 600)")
    node.add_argument("--tls-ca", dest="tls_ca", help="the cluster CA's certificate (PEM)")
    node.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback listen address without TLS and auth",
    )
    node.add_argument("--partitions", type=int)
    node.add_argument("--vnodes", type=int)
    node.add_argument("--log-level", dest="log_level")
    return p


async def _serve(node: Node) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    await stop.wait()
    await node.stop()


def _env_settings() -> dict[str, object]:
    """KV_NODE_SETTINGS: a JSON object of node settings (the kv/config.py names); flags win.
    Used by test harnesses to tune timers of nodes that ops/cluster starts."""
    raw = os.environ.get("KV_NODE_SETTINGS", "")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise config_mod.ConfigError(f"KV_NODE_SETTINGS: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise config_mod.ConfigError("KV_NODE_SETTINGS: must be a JSON object")
    return value


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    args.pop("command")
    path = args.pop("config")
    try:
        cfg = config_load.load(
            path, {**_env_settings(), **{k: v for k, v in args.items() if v is not None}}
        )
        startup.check_ports(cfg)
        startup.check_admin_token(cfg)
        startup.check_tls(cfg)
        startup.prepare_data_dir(cfg)
    except (config_mod.ConfigError, OSError) as exc:
        print(f"kv: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level,
        format=f"%(asctime)s {cfg.node_id} %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_serve(Node(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

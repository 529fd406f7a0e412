"""`python -m kv node` refuses a bad start with one line and exit code 2, before anything
starts (kv/startup.py, issue 11 item 9)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.unit.test_startup import SECRET, config


def test_the_node_command_fails_fast_with_one_line(tmp_path: Path) -> None:
    """`python -m kv node` on a used HTTP port: exit 2, one line naming the port, before
    anything starts (no data directory is made)."""
    cfg = config(tmp_path)
    host, _, port = cfg.listen.rpartition(":")
    me = f"n1={cfg.advertise}/{cfg.raft_advertise}"
    with socket.create_server((host, int(port))):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "kv",
                "node",
                "--node-id",
                "n1",
                "--data-dir",
                cfg.data_dir,
                "--listen",
                cfg.listen,
                "--raft-listen",
                cfg.raft_listen,
                "--initial-cluster",
                me,
            ],
            env={**os.environ, "KV_CLUSTER_SECRET": SECRET},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"listen: cannot bind {cfg.listen}" in lines[0], done.stderr
    assert not os.path.exists(cfg.data_dir)

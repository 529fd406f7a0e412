"""`ops/cluster up --auth` (issue 11 item 1): a 3-process cluster that requires tokens,
its admin token in DIR/admin.token (mode 600), usable by curl-style requests and by
`ops/kvctl --token-file`; requests without a token are 401 on every node."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ops.ports import free_base_port

ROOT = Path(__file__).resolve().parents[2]


def ops(*args: str, d: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "ops" / "cluster.py"), *args, "--dir", str(d)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)


def status_of(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_up_auth_makes_every_node_require_the_admin_token(tmp_path: Path) -> None:
    d = tmp_path / "c"
    base = free_base_port(3)
    try:
        up = ops("up", "--auth", "--base-port", str(base), d=d)
        assert up.returncode == 0, up.stderr
        token_file = d / "admin.token"
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        token = token_file.read_text().strip()
        for i in range(3):
            url = f"http://127.0.0.1:{base + i}"
            assert status_of(f"{url}/v1/health") == 200
            assert status_of(f"{url}/v1/keyspaces") == 401
            assert status_of(f"{url}/v1/keyspaces/example_eventual", token) == 200
        kvctl = [sys.executable, "-m", "kvctl", "--endpoints", f"127.0.0.1:{base}", "--json"]
        made = subprocess.run(
            [*kvctl, "--token-file", str(token_file), "token", "create", "ci", "--role", "read"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        reader: Any = json.loads(made.stdout)
        url = f"http://127.0.0.1:{base + 1}/v1/keyspaces"
        assert status_of(url, reader["token"]) == 200  # a token made on n1 works on n2
        refused = subprocess.run(
            [*kvctl, "cluster", "status"], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert refused.returncode != 0 and "token" in refused.stderr.lower(), refused
    finally:
        ops("down", d=d)

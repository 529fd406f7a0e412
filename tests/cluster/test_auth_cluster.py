"""`ops/cluster up --auth` (issue 11 item 1): a 3-process cluster that requires tokens,
its admin token in DIR/admin.token (mode 600), usable by curl-style requests and by
`ops/kvctl --token-file`; requests without a token are 401 on every node, and a revoked
token is refused by every node within a second."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

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
        # revoked through n1: every node refuses the token within a second (issue 11)
        token_id = reader["token"].split(".")[1]  # kv1.<id>.<secret>
        revoke = [*kvctl, "--token-file", str(token_file), "token", "revoke", token_id]
        revoked = subprocess.run(revoke, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 1.0
        urls = [f"http://127.0.0.1:{base + i}/v1/keyspaces" for i in range(3)]
        while time.monotonic() < deadline and any(
            status_of(u, reader["token"]) != 401 for u in urls
        ):
            time.sleep(0.05)
        assert [status_of(u, reader["token"]) for u in urls] == [401, 401, 401]
    finally:
        ops("down", d=d)


def test_up_secure_serves_https_and_mutual_tls_only(tmp_path: Path) -> None:
    """`ops/cluster up --secure` (issue 11 item 2): DIR/ca.pem and DIR/admin.token; plain
    HTTP to the API ports and plain TCP to the Raft ports get nothing; https with the CA
    works on every node, through curl too, and the example keyspaces were made over TLS."""
    d = tmp_path / "c"
    base = free_base_port(3)
    try:
        up = ops("up", "--secure", "--base-port", str(base), d=d)
        assert up.returncode == 0, up.stderr
        assert "--cacert" in up.stdout and "https://" in up.stdout
        ca = str(d / "ca.pem")
        token = (d / "admin.token").read_text().strip()
        tls = ssl.create_default_context(cafile=ca)
        for i in range(3):
            for port in (base + i, base + 100 + i):  # the API port, the Raft port
                with pytest.raises(
                    (urllib.error.URLError, ConnectionError, http.client.HTTPException)
                ):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=10)
            url = f"https://127.0.0.1:{base + i}/v1/keyspaces/example_linearizable"
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=10, context=tls) as reply:
                assert reply.status == 200
        if shutil.which("curl"):
            key_url = f"https://127.0.0.1:{base + 2}/v1/keyspaces/example_linearizable/keys/k"
            curl = subprocess.run(
                ["curl", "-s", "--cacert", ca, "-H", f"Authorization: Bearer {token}",
                 "-X", "PUT", key_url, "-d", '{"value": 1}'],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert curl.returncode == 0 and '"version"' in curl.stdout, curl
        kvctl = [sys.executable, "-m", "kvctl", "--endpoints", f"127.0.0.1:{base + 1}"]
        status = subprocess.run(
            [*kvctl, "--cacert", ca, "--token-file", str(d / "admin.token"), "cluster", "status"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert status.returncode == 0 and "n3" in status.stdout, status
    finally:
        ops("down", d=d)

"""ops/bench end to end against a real 3-node cluster: its eventual clients are the
well-behaved clients it claims to be (ops/bench.py `KvEventualTarget`).

Each phase forks new load processes; a put must still send the key's context learned by the
earlier phases (and the preload), and two load processes must not write the same key, or
every phase would leave each key one more sibling and the benchmark would measure growing
sibling sets instead of overwrites (docs/benchmarks.md, session 11). Nothing here asserts a
timing: the run must succeed without errors and leave every key with a single version.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.cluster.harness import Cluster

ROOT = Path(__file__).resolve().parents[2]
KEYS = 40
BENCH_DEADLINE_S = 120


def test_eventual_puts_in_every_phase_overwrite_with_the_context(
    cluster: Cluster, tmp_path: Path
) -> None:
    report = tmp_path / "bench.json"
    args = ["--mode", "eventual", "--op", "put,get,put", "--clients", "1,3", "--procs", "2"]
    args += ["--keys", str(KEYS), "--duration", "1", "--warmup", "0", "--json", str(report)]
    run = subprocess.run(
        [sys.executable, str(ROOT / "ops" / "bench.py"), "--dir", cluster.dir, *args],
        capture_output=True,
        text=True,
        timeout=BENCH_DEADLINE_S,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(report.read_text())["results"]
    assert len(results) == 6 and all(r["ok"] > 0 and not r["errors"] for r in results)
    node = cluster.addresses()[0]
    for i in range(KEYS):
        url = f"http://{node}/v1/keyspaces/bench_eventual/keys/k{i:07d}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            doc = json.loads(reply.read())
        assert "value" in doc and "siblings" not in doc, doc

"""`ops/verify` end to end: the bounded runs of issue 3's acceptance (both modes, < 3 min).

Each test runs ops/verify.py as a subprocess (its own private 3-node cluster, started and
stopped by ops/verify itself) with a deadline, and reads its JSON report. TMPDIR points
into the test's tmp_path, so every node process of the run has that path on its command
line: after the run the test looks for such processes by pid and fails if one survived
(it kills them first - nothing a test starts may outlive it).

Three tests use a loopback cluster (kill and pause faults; the negative control, which runs
again until the checker catches a stale read); two add partitions, for which ops/verify
starts the cluster with `ops/cluster up --netns` (root, `ip` and `nft`, docs/netns.md).
Those two skip with the reason when namespaces are not available, and check afterwards that
no namespace, host link or registry entry of the run is left.

The seed is random and printed; it is drawn among the seeds whose fault plan (pure, the
same `plan_faults` call ops/verify makes) has a window of every requested kind ending at
least PLAN_SLACK_S before the fault-free tail, so a slow restart cannot push the last
window out of the run.

Nothing here asserts timings or throughput: a run must make progress (ops/verify's
`progress` check: at least one ok read and one ok write), not a number of operations in
its fixed duration, which depends on how loaded the machine is.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ops import netns
from tests.cluster.harness import ENABLE_NETNS
from tests.cluster.stale_reads import provably_stale
from verification.faults import PlanShape, plan_faults, windows
from verification.history import op_from_dict

ROOT = Path(__file__).resolve().parents[2]
VERIFY = ROOT / "ops" / "verify.py"
NODES = ("n1", "n2", "n3")  # the private cluster's node ids, as ops/verify plans with them
PLAN_SLACK_S = 2.0
BUSY_WAIT_S = 60.0  # ops/verify's NETNS_BUSY_WAIT_S: a --netns run may wait that long first
STALE_DEADLINE_S = 360.0  # the negative control starts new runs until then
STALE_MIX = "read=0.6,write=0.3,cas=0.1"  # no deletes: versions only grow (stale_reads.py)


def _node_pids(marker: str) -> list[int]:
    """Live processes whose command line contains `marker` (our private tmp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"kv" in cmdline:
            pids.append(int(entry.name))
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def seed_with_every_kind(kinds: list[str], duration_s: float) -> int:
    """A random seed whose plan has every kind of `kinds`, with PLAN_SLACK_S to spare."""
    rng = random.SystemRandom()
    shape = PlanShape()
    horizon = duration_s * (1 - shape.quiet_fraction)
    for _ in range(10_000):
        seed = rng.randrange(1 << 30)
        pairs = windows(plan_faults(random.Random(seed), NODES, kinds, duration_s, shape))
        if {b.kind for b, _ in pairs} == set(kinds) and pairs[-1][1].at_s <= horizon - PLAN_SLACK_S:
            return seed
    raise AssertionError(f"no seed plans {kinds} within {duration_s}s")


def run_verify(
    tmp_path: Path, *args: str, deadline_s: float, seed: int
) -> tuple[int, dict[str, Any], str]:
    print(f"ops/verify seed={seed}")
    report, timeline = tmp_path / "report.json", tmp_path / "timeline.html"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    cmd = [
        sys.executable,
        str(VERIFY),
        *args,
        "--seed",
        str(seed),
        "--report",
        str(report),
        "--timeline",
        str(timeline),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=dict(os.environ, TMPDIR=str(scratch)),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # ops/verify stops its cluster on an interrupt
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError(f"ops/verify did not finish within {deadline_s}s:\n{out}") from None
    finally:
        leftovers = _node_pids(str(scratch))
        _kill(leftovers)
    print(out)
    assert leftovers == [], f"ops/verify left node processes behind: {leftovers}"
    assert list(scratch.iterdir()) == [], "ops/verify left its cluster directory behind"
    assert timeline.read_text().startswith("<!doctype html>")
    doc = json.loads(report.read_text())
    _assert_no_namespaces_left(doc)
    return proc.returncode, doc, out


def _assert_no_namespaces_left(doc: dict[str, Any]) -> None:
    rec = doc["cluster"].get("netns")
    if rec is None:
        return
    left = netns.leftovers(netns.Topology(rec["run_id"], NODES))
    assert left == [], f"ops/verify left parts of its --netns cluster behind: {left}"


def _require_netns() -> None:
    """Skip early (not after a whole run) where ops/verify would skip the partitions."""
    if os.geteuid() != 0:
        pytest.skip(f"partition runs need root (network namespaces and nftables): {ENABLE_NETNS}")
    try:
        netns.check_support()
    except netns.NetnsUnavailable as exc:
        pytest.skip(f"partition runs skipped: {exc} ({ENABLE_NETNS})")


def _skip_if_partition_skipped(doc: dict[str, Any]) -> None:
    for skipped in doc["faults"]["skipped"]:
        if skipped["kind"] == "partition":  # e.g. 10.77.0.0/24 held by another run
            pytest.skip(f"partition skipped by ops/verify: {skipped['reason']}")


def _applied(doc: dict[str, Any]) -> set[str]:
    return {f["action"] for f in doc["faults"]["applied"] if not f["skipped"] and not f["error"]}


def _summary(doc: dict[str, Any]) -> str:
    keep = ("seed", "verdict", "counts", "checks", "checker_stats", "workload_s", "elapsed_s")
    faults = [
        f"{f['at_s']:.1f}s {f['action']} {' '.join(f['args']) if f['args'] else f['node']}"
        for f in doc["faults"]["applied"]
        if not f["skipped"]
    ]
    return json.dumps(
        {**{k: doc[k] for k in keep}, "faults": faults, "skipped": doc["faults"]["skipped"]},
        default=str,
    )


# ---------------------------------------------------------------------- loopback cluster
@pytest.mark.cluster
def test_linearizable_keyspace_under_kill_and_pause_is_linearizable(tmp_path: Path) -> None:
    kinds = ["kill", "pause"]
    code, doc, out = run_verify(
        tmp_path,
        *("--keyspace", "lin", "--consistency", "linearizable", "--duration", "15"),
        *("--faults", ",".join(kinds)),
        deadline_s=90,
        seed=seed_with_every_kind(kinds, 15),
    )
    print(_summary(doc))
    assert code == 0, out
    assert doc["verdict"] == "ok" and doc["checks"]["linearizable"]["verdict"] == "ok"
    assert {"kill", "start", "pause", "resume"} <= _applied(doc), doc["faults"]["applied"]
    assert doc["checks"]["progress"]["verdict"] == "ok", doc["checks"]["progress"]


@pytest.mark.cluster
def test_stale_reads_under_a_paused_leader_are_a_violation(tmp_path: Path) -> None:
    """The negative control: a checker that cannot fail proves nothing.

    Whether a `consistency=stale` read lands on a replica that is behind in a 12 s run is
    luck, so ops/verify runs until it reports the violation, up to STALE_DEADLINE_S. No
    deletes in the mix, so versions only grow; every run the checker accepts must hold no
    provably stale read (tests/cluster/stale_reads.py), or the checker missed one."""
    end = time.monotonic() + STALE_DEADLINE_S
    for attempt in itertools.count(1):
        run_dir = tmp_path / f"run-{attempt}"
        run_dir.mkdir()
        history_path = run_dir / "history.json"
        code, doc, out = run_verify(
            run_dir,
            *("--keyspace", "lin", "--consistency", "linearizable", "--duration", "12"),
            *("--faults", "pause", "--stale-reads", "--mix", STALE_MIX),
            *("--history", str(history_path)),
            deadline_s=90,
            seed=seed_with_every_kind(["pause"], 12),
        )
        print(f"attempt {attempt}: {_summary(doc)}")
        if code == 1:
            break
        assert code in (0, 2), out  # 2: inconclusive (checker budget), never an error
        history = [op_from_dict(d) for d in json.loads(history_path.read_text())["ops"]]
        missed = provably_stale(history)
        assert code == 2 or missed == [], f"checker accepted provably stale reads: {missed[:3]}"
        assert time.monotonic() < end, f"no stale read was caught in {attempt} runs"
    lin = doc["checks"]["linearizable"]
    assert doc["verdict"] == "violation" and lin["verdict"] == "violation"
    assert lin["key"] in doc["keys"] and lin["ops_around"]


def _assert_eventual_ok(code: int, doc: dict[str, Any], out: str) -> None:
    checks = doc["checks"]
    assert checks["progress"]["verdict"] == "ok", checks["progress"]
    assert checks["lost_writes"]["counts"]["acknowledged"] > 0
    assert checks["lost_writes"]["counts"]["lost"] == 0, checks["lost_writes"]
    assert checks["phantoms"]["verdict"] == "ok", checks["phantoms"]
    assert checks["convergence"]["verdict"] == "ok", checks["convergence"]
    assert code == 0 and doc["verdict"] == "ok", out
    assert "staleness curve" in out
    curve = doc["staleness_curve"]
    assert {p["r"] for p in curve} == {1, 2} and all(p["trials"] > 0 for p in curve)


@pytest.mark.cluster
def test_eventual_keyspace_under_kill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    code, doc, out = run_verify(
        tmp_path,
        *("--keyspace", "ev", "--consistency", "eventual", "--duration", "15"),
        *("--faults", "kill"),
        deadline_s=90,
        seed=seed_with_every_kind(["kill"], 15),
    )
    print(_summary(doc))
    _assert_eventual_ok(code, doc, out)
    assert {"kill", "start"} <= _applied(doc)


# ---------------------------------------------------------------------- --netns cluster
@pytest.mark.cluster
def test_linearizable_keyspace_under_kill_pause_and_partition_is_linearizable(
    tmp_path: Path,
) -> None:
    _require_netns()
    kinds = ["kill", "pause", "partition"]
    code, doc, out = run_verify(
        tmp_path,
        *("--keyspace", "lin", "--consistency", "linearizable", "--duration", "20"),
        *("--faults", ",".join(kinds)),
        deadline_s=120 + BUSY_WAIT_S,
        seed=seed_with_every_kind(kinds, 20),
    )
    print(_summary(doc))
    _skip_if_partition_skipped(doc)
    assert code == 0, out
    assert doc["verdict"] == "ok" and doc["checks"]["linearizable"]["verdict"] == "ok"
    applied = _applied(doc)
    assert {"kill", "start", "pause", "resume", "partition", "heal"} <= applied, applied
    assert doc["checks"]["progress"]["verdict"] == "ok", doc["checks"]["progress"]


@pytest.mark.cluster
def test_eventual_keyspace_under_kill_and_partition_loses_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    _require_netns()
    kinds = ["kill", "partition"]
    code, doc, out = run_verify(
        tmp_path,
        *("--keyspace", "ev", "--consistency", "eventual", "--duration", "20"),
        *("--faults", ",".join(kinds)),
        deadline_s=120 + BUSY_WAIT_S,
        seed=seed_with_every_kind(kinds, 20),
    )
    print(_summary(doc))
    _skip_if_partition_skipped(doc)
    _assert_eventual_ok(code, doc, out)
    assert {"kill", "start", "partition", "heal"} <= _applied(doc), doc["faults"]["applied"]

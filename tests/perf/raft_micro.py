"""Raft write cost without the HTTP layer: CPU per linearizable write, in-process groups.

Three node processes on loopback, each with one `RaftMux`, one `RaftDriver` and `--groups`
real `RaftGroup`s (LevelDB state machine, journals in a temporary directory) — the Raft
part of a 3-node cluster with Q = `--groups`, every node a member of every group. Each
node runs `--clients` writers on its asyncio loop (the cluster benchmark's 16 connections
spread over 3 nodes ≈ 5 each): a writer proposes a put of a fresh key to a random group on
its node and waits for it to be applied there (a follower's proposal is forwarded to the
leader by pysyncobj, as in a cluster). After `--warmup` seconds every node measures, over
the same `--seconds` window: its CPU (getrusage, all threads), the writes its writers
finished, and its durable syncs (journal fsyncs, vote/term-file fsyncs).

Prints one JSON line: CPU ms per write (3 nodes together), writes/s, syncs per write.
Run from the repository root (the code under test is whatever `kv`/`raft_groups` imports):

    .venv/bin/python -m tests.perf.raft_micro [--groups 64] [--clients 5] [--seconds 8]

The machine's speed swings: compare two builds only in alternating runs (docs/raft.md
"Cost per write"). Not a test (no `test_` prefix): pytest does not collect it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.ports import free_port

SECRET = "m" * 32


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------- one node (child)
def _node(args: argparse.Namespace) -> None:
    from kv.leveldb import LevelDBEngine
    from raft_groups import commands
    from raft_groups.manager import LinearizableMachine
    from raft_groups.syncobj_adapter import (
        GroupSettings,
        NodeLog,
        RaftDriver,
        RaftGroup,
        RaftMux,
        RaftNodeSettings,
    )

    addresses = args.addresses.split(",")
    me = addresses[args.node]
    peers = tuple(a for a in addresses if a != me)
    data = Path(args.dir) / f"n{args.node}"
    data.mkdir(parents=True)
    engine = LevelDBEngine(str(data / "db"))
    log = NodeLog(str(data / "raft_log"), sync=not args.no_sync)
    driver = RaftDriver(RaftMux(RaftNodeSettings(me, me, SECRET, peers)), log)
    groups = []
    for g in range(args.groups):
        settings = GroupSettings(
            gid=f"g{g}",
            self_address=me,
            peers=peers,
            data_dir=str(data / f"g{g}"),
        )
        groups.append(RaftGroup(driver, settings, LinearizableMachine(engine, g + 1)))
    driver.start()
    deadline = time.monotonic() + 60
    while not all(group.status().leader for group in groups):
        if time.monotonic() > deadline:
            raise SystemExit(f"node {args.node}: groups without a leader after 60 s")
        time.sleep(0.05)
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    result = asyncio.run(_load(args, groups, driver, commands))
    print(json.dumps(result), flush=True)
    sys.stdin.readline()  # "stop": every node stays up until all are measured
    driver.stop()
    engine.close()


async def _load(args: argparse.Namespace, groups: list[Any], driver: Any, commands: Any) -> Any:
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed * 31 + args.node)
    counts = {"writes": 0, "errors": 0}
    measuring = False
    stop_at = time.monotonic() + args.warmup + args.seconds

    async def writer(w: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            key = f"n{args.node}w{w}k{n}"
            cmd = commands.Command(op="put", uid=1, key=key, value="v" * args.value_size)
            group = rng.choice(groups)
            _spin(args.frontend_us)
            try:
                await asyncio.wait_for(group.propose(commands.encode(cmd), loop), 5)
            except Exception:  # noqa: BLE001 - counted, the benchmark goes on
                counts["errors"] += measuring
                continue
            counts["writes"] += measuring

    tasks = [asyncio.ensure_future(writer(w)) for w in range(args.clients)]
    await asyncio.sleep(args.warmup)
    before = _syncs(driver, groups), _cpu(), time.monotonic()
    measuring = True
    await asyncio.sleep(args.seconds)
    measuring = False
    after = _syncs(driver, groups), _cpu(), time.monotonic()
    await asyncio.gather(*tasks)
    return {
        "node": args.node,
        "writes": counts["writes"],
        "errors": counts["errors"],
        "cpu": after[1] - before[1],
        "wall": after[2] - before[2],
        "journal_syncs": after[0][0] - before[0][0],
        "vote_syncs": after[0][1] - before[0][1],
        "term_moves": after[0][2] - before[0][2],
    }


def _spin(microseconds: int) -> None:
    """Hold the asyncio thread (and the GIL) for `microseconds` of CPU, as parsing and
    answering an HTTP request would."""
    end = time.thread_time() + microseconds / 1e6
    while time.thread_time() < end:
        pass


def _syncs(driver: Any, groups: list[Any]) -> tuple[int, int, int]:
    """Durable syncs so far: journal, vote/term file (0 where the build has no counter);
    and the sum of the groups' terms (an election in the window moves it)."""
    votes = sum(int(getattr(g, "vote_syncs", 0)) for g in groups)
    return int(driver.journal_syncs), votes, sum(g.status().term for g in groups)


# ---------------------------------------------------------------------- the run (parent)
def _run(args: argparse.Namespace) -> dict[str, Any]:
    addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(3))
    with tempfile.TemporaryDirectory(prefix="raft_micro_", dir=args.tmp) as tmp:
        base = [sys.executable, "-m", "tests.perf.raft_micro", "--addresses", addresses]
        base += ["--dir", tmp, *_passed(args)]
        children = [
            subprocess.Popen(
                [*base, "--node", str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            for i in range(3)
        ]
        try:
            return _drive(children)
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                child.wait()


def _drive(children: list[subprocess.Popen[str]]) -> dict[str, Any]:
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if line != "ready":
            raise SystemExit(f"a node did not start: {line!r}")
    for child in children:
        _say(child, "go")
    results = []
    for child in children:
        assert child.stdout is not None
        results.append(json.loads(child.stdout.readline()))
    for child in children:
        _say(child, "stop")
    return _summary(results)


def _say(child: subprocess.Popen[str], line: str) -> None:
    assert child.stdin is not None
    child.stdin.write(line + "\n")
    child.stdin.flush()


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    writes = sum(r["writes"] for r in results)
    wall = max(r["wall"] for r in results)
    per = max(writes, 1)
    return {
        "writes": writes,
        "errors": sum(r["errors"] for r in results),
        "writes_per_s": round(writes / wall, 1),
        "cpu_ms_per_write": round(1000 * sum(r["cpu"] for r in results) / per, 3),
        "cpu_s_per_s": round(sum(r["cpu"] for r in results) / wall, 3),  # 3 nodes, in cores
        "cpu_ms_per_write_by_node": [round(1000 * r["cpu"] / per, 3) for r in results],
        "journal_syncs_per_write": round(sum(r["journal_syncs"] for r in results) / per, 2),
        "vote_syncs_per_write": round(sum(r["vote_syncs"] for r in results) / per, 3),
        "term_moves": sum(r["term_moves"] for r in results),
    }


def _passed(args: argparse.Namespace) -> list[str]:
    names = ("groups", "clients", "seconds", "warmup", "value_size", "seed", "frontend_us")
    out = [item for n in names for item in (f"--{n.replace('_', '-')}", str(getattr(args, n)))]
    return [*out, "--no-sync"] if args.no_sync else out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--clients", type=int, default=5, help="writers per node")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--value-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-sync", action="store_true", help="NodeLog(sync=False)")
    parser.add_argument("--tmp", default=None, help="where the data goes (default: $TMPDIR)")
    parser.add_argument(
        "--frontend-us",
        type=int,
        default=0,
        help="CPU a writer spends on the asyncio thread per write (a node's HTTP work)",
    )
    parser.add_argument("--node", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--addresses", default="", help=argparse.SUPPRESS)
    parser.add_argument("--dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node is not None:
        _node(args)
        return
    print(json.dumps({"cwd": os.getcwd(), **_run(args)}), flush=True)


if __name__ == "__main__":
    main()

"""Real node processes for the cluster tier, driven through ops/cluster (DESIGN.md §7).

`Cluster` is the shared local-cluster helper (ops/localcluster.py) with what a test adds:
a printed seed that also picks the port range, the nodes' log tails in every failure, and
`up()` skipping the test where a --netns cluster is impossible.

Every wait is a poll with a deadline; every process a test starts is stopped in
`Cluster.down()`, which the fixture calls even when the test fails.

`Cluster(netns=True)` starts the nodes with `ops/cluster up --netns` (one network namespace
per node, docs/netns.md) so that `partition(...)` and `heal()` can cut links. Where that is
impossible (no root, no `ip`/`nft`: ops/cluster exits 3) `up()` skips the test with the
reason; while another --netns cluster holds 10.77.0.0/24 (exit 4) it waits up to
BUSY_WAIT_S, then skips. `down()` runs `ops/cluster down` and `cleanup`, kills every node
pid it saw and, for a --netns cluster, removes the run's namespaces in-process as a last
resort.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from kv.client import KvClient
from ops.localcluster import EXIT_BUSY, ROOT, LocalCluster, NetnsRefused, alive

__all__ = ["ROOT", "Cluster", "alive", "hint_backlog", "sigterm_raises", "until", "wait_until"]

BUSY_WAIT_S = 120.0  # how long up(netns=True) waits for another run to free 10.77.0.0/24
ENABLE_NETNS = "run as root with iproute2 and nftables (apt-get install nftables), docs/netns.md"


def wait_until(pred: Callable[[], Any], deadline_s: float, what: str, interval: float = 0.1) -> Any:
    end = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = pred()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - a failing probe is just "not yet"
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what} (last: {last!r})")


async def until(
    check: Callable[[], Awaitable[Any]], deadline_s: float, what: str, interval: float = 0.1
) -> Any:
    """`wait_until` for a coroutine check: poll until it returns something true. A probe
    that raises is "not yet" (a killed node, an election), except an AssertionError,
    which fails at once."""
    end = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = await check()
            if last:
                return last
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing probe is just "not yet"
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what} (last: {last!r})")


class Cluster(LocalCluster):
    def __init__(
        self,
        n: int = 3,
        seed: int | None = None,
        netns: bool = False,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 30)
        print(f"cluster seed={self.seed}")
        super().__init__(
            n=n,
            netns=netns,
            rng=random.Random(self.seed),
            prefix="kv-cluster-",
            logs_in_errors=True,
            settings=settings,
        )

    def ops(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`ops/cluster ARGS --dir DIR` (RuntimeError with the nodes' logs when `check`)."""
        return self.run(*args, timeout=timeout, check=check)

    def up(
        self, busy_wait_s: float = BUSY_WAIT_S, say: Callable[[str], None] | None = None
    ) -> Cluster:
        try:
            super().up(busy_wait_s, say)
        except NetnsRefused as exc:
            if exc.code == EXIT_BUSY:
                pytest.skip(f"10.77.0.0/24 stayed busy for {busy_wait_s:.0f}s: {exc.reason}")
            pytest.skip(f"partition tests skipped: {exc.reason} ({ENABLE_NETNS})")
        return self


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM to the test run raises, so `finally` blocks still stop nodes and namespaces."""

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


async def hint_backlog(client: KvClient, nodes: list[str]) -> int:
    """Hints pending on `nodes` for any owner, from /v1/cluster (hinted handoff)."""
    total = 0
    for node in nodes:
        info = (await client.cluster(node=node))["hinted_handoff"]
        total += sum(info["pending"].values())
    return total

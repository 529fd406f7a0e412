"""Ports for nodes that tests start in-process or as child processes (DESIGN.md §7: ask the
OS, never guess).

Every port comes from below Linux's ephemeral range (32768+), so no client socket can take
a stopped node's port before the test restarts it; each pytest-xdist worker draws from its
own slice of 10000..19999 (ops/cluster's local clusters use 20000..32567, ops/ports.py),
so two workers never hand out the same port; and a process never hands one out twice, so
two nodes of one test never share an address (seen in CI: two OS-chosen ports coincided).
"""

from __future__ import annotations

import os
import random
import threading

from ops.ports import port_bindable

LOW, HIGH = 10000, 20000

_lock = threading.Lock()
_handed_out: set[int] = set()


def worker_slice(worker: str | None, count: str | None) -> range:
    """This worker's ports: slice `gwI` of `count` equal slices of LOW..HIGH (all of it
    outside xdist)."""
    total = int(count) if count and count.isdigit() and int(count) > 0 else 1
    index = int(worker[2:]) if worker and worker[2:].isdigit() else 0
    width = (HIGH - LOW) // total
    low = LOW + (index % total) * width
    return range(low, low + width)


def free_port() -> int:
    """A port that is bindable now and that this process has not handed out before."""
    ports = worker_slice(
        os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    )
    rng = random.SystemRandom()
    with _lock:
        for _ in range(1000):
            port = rng.choice(ports)
            if port not in _handed_out and port_bindable(port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no bindable port left in {ports.start}..{ports.stop - 1}")

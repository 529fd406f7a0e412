"""Port ranges for local clusters (ops/cluster layout: HTTP at P+i, Raft at P+100+i).

Chosen by asking the OS whether each port is bindable, and kept below Linux's ephemeral
range (32768+), so no client socket can take a stopped node's port before it restarts.
"""

from __future__ import annotations

import random
import socket


def port_bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_base_port(n: int, rng: random.Random | None = None) -> int:
    """A base P with P..P+n-1 and P+100..P+100+n-1 bindable, in 20000..32567."""
    rng = rng or random.SystemRandom()
    for _ in range(200):
        base = rng.randrange(20000, 32768 - 100 - n)
        if all(port_bindable(base + off + i) for off in (0, 100) for i in range(n)):
            return base
    raise RuntimeError("no bindable port range below 32768 found")

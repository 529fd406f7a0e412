"""Record a history of concurrent single-key operations against a live cluster (Jepsen-style).

Each client is an asyncio task issuing read / write / cas (`if_version`) / delete on a
bounded set of keys with unique values, timestamping call and return on a monotonic clock.
An operation ends `ok` (including a 412, which *observed* a version), `fail` (certainly not
applied: 503 and the 4xx other than 412) or `unknown` (504, timeout, lost connection). A
client that saw `unknown` continues under a new process id, as in Knossos: its earlier
operation may still take effect concurrently with everything it does next.

The choice of operation is the pure `next_op(rng, ...)`; `record` is the I/O shell.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kv.client import KvClient
from kv.errors import ConditionFailed, KeyNotFound, KvError, Retryable, UnknownOutcome
from verification.history import Op

Mix = dict[str, float]
DEFAULT_MIX: Mix = {"read": 0.45, "write": 0.3, "cas": 0.2, "delete": 0.05}


@dataclass(frozen=True)
class Planned:
    kind: str
    key: str
    value: Any = None
    if_version: int | None = None


def next_op(
    rng: random.Random, keys: Sequence[str], mix: Mix, known: dict[str, int], value: str
) -> Planned:
    """Pure: the next operation of one client, given what it last saw of each key's version."""
    kind = rng.choices(list(mix), weights=list(mix.values()))[0]
    key = rng.choice(list(keys))
    if kind == "read":
        return Planned("read", key)
    if kind == "write":
        return Planned("write", key, value)
    if kind == "cas":
        # mostly the version this client last saw (a real read-modify-write), sometimes stale
        guess = known.get(key, 0) if rng.random() < 0.8 else max(known.get(key, 0) - 1, 0)
        return Planned("cas", key, value, guess)
    return Planned("delete", key)


@dataclass
class _Ids:
    next_op: int = 0
    next_process: int = 0

    def op(self) -> int:
        self.next_op += 1
        return self.next_op

    def process(self) -> int:
        self.next_process += 1
        return self.next_process


@dataclass
class RecorderConfig:
    keyspace: str
    keys: Sequence[str]
    clients: int = 8
    duration_s: float = 10.0
    seed: int = 0
    mix: Mix = field(default_factory=lambda: dict(DEFAULT_MIX))
    stale_reads: bool = False  # the negative control: reads with consistency=stale
    timeout_ms: int = 2000


async def record(
    client: KvClient, cfg: RecorderConfig, clock: Callable[[], float] = time.monotonic
) -> list[Op]:
    """Run `cfg.clients` concurrent clients for `cfg.duration_s`; return the history."""
    history: list[Op] = []
    ids = _Ids()
    deadline = clock() + cfg.duration_s
    rngs = [random.Random(f"{cfg.seed}/{i}") for i in range(cfg.clients)]
    await asyncio.gather(
        *(_client(client, cfg, rng, ids, history, deadline, clock) for rng in rngs)
    )
    return history


async def _client(
    client: KvClient,
    cfg: RecorderConfig,
    rng: random.Random,
    ids: _Ids,
    history: list[Op],
    deadline: float,
    clock: Callable[[], float],
) -> None:
    process = ids.process()
    known: dict[str, int] = {}
    n = 0
    while clock() < deadline:
        n += 1
        plan = next_op(rng, cfg.keys, cfg.mix, known, f"p{process}-{n}")
        call = clock()
        op = await _perform(client, cfg, plan, ids.op(), process, call, clock)
        history.append(op)
        if op.outcome == "unknown":
            process = ids.process()
        elif op.outcome == "ok" and op.version is not None:
            known[plan.key] = op.version


async def _perform(
    client: KvClient,
    cfg: RecorderConfig,
    plan: Planned,
    op_id: int,
    process: int,
    call: float,
    clock: Callable[[], float],
) -> Op:
    base: dict[str, Any] = dict(id=op_id, process=process, kind=plan.kind, key=plan.key, call=call)
    if plan.kind in ("write", "cas"):
        base["value"] = plan.value
    if plan.kind == "cas":
        base["if_version"] = plan.if_version
    try:
        reply = await _request(client, cfg, plan)
    except KeyNotFound:
        return Op(**base, ret=clock(), outcome="ok", value=None, version=0)
    except ConditionFailed as exc:
        current = int(exc.details.get("current_version", -1))
        return Op(**base, ret=clock(), outcome="ok", version=current, condition_failed=True)
    except (UnknownOutcome, TimeoutError):
        return Op(**base, ret=None, outcome="unknown")
    except (Retryable, KvError):
        return Op(**base, ret=clock(), outcome="fail")
    ret = clock()
    if plan.kind == "read":
        return Op(**base, ret=ret, outcome="ok", value=reply.get("value"), version=reply["version"])
    return Op(**base, ret=ret, outcome="ok", version=int(reply["version"]))


async def _request(client: KvClient, cfg: RecorderConfig, plan: Planned) -> dict[str, Any]:
    ks, key = cfg.keyspace, plan.key
    if plan.kind == "read":
        query: dict[str, Any] = {"timeout_ms": cfg.timeout_ms}
        if cfg.stale_reads:
            query["consistency"] = "stale"
        return await client.get(ks, key, **query)
    if plan.kind == "delete":
        return await client.delete(ks, key, timeout_ms=cfg.timeout_ms)
    return await client.put(
        ks, key, plan.value, if_version=plan.if_version, timeout_ms=cfg.timeout_ms
    )

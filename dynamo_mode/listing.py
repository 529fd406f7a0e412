"""Key listing of eventual keyspaces (kv/listing.py, docs/listing.md).

Each partition's keys are read from every primary of its preference list that the failure
detector thinks alive (`key_list`, dynamo_mode/messages.py: keys and the causal data of
their versions, no values). A key is listed when the reconciled versions of all answers
hold a live version, so a key written with w=1 is listed when the one replica that has it
answers, and a tombstone on any answering replica hides what it supersedes. A partition
needs the keyspace's `read_quorum` answers, else the listing is a 503. Not listed: versions
held only as hints on fallbacks until they are handed off (Dynamo §4.6), and keys whose
every live version has expired on this node's clock (docs/ttl.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from dynamo_mode import expiry, siblings
from dynamo_mode.scan_messages import KEY_LIST, ListScanRequest, ScanBatch, ScanRequest
from dynamo_mode.siblings import Version
from kv.errors import KvError, QuorumUnavailable
from kv.listing import ListRequest, Slice
from kv.routing import Route
from kv.transport import Transport


def partition_slice(batches: Sequence[ScanBatch], now_ms: int) -> Slice:
    """The replicas' batches of one partition merged: the keys up to the smallest last key
    of a batch that stopped early (past it, that replica's versions are unknown) whose
    reconciled versions hold a live one, not expired at `now_ms`. Pure."""
    bounds = [b.items[-1][0] for b in batches if not b.done and b.items]
    bound = min(bounds) if bounds else None
    versions: dict[str, list[Version]] = {}
    for batch in batches:
        for key, found in batch.items:
            if bound is None or key <= bound:
                versions.setdefault(key, []).extend(found)
    live = (k for k, vs in versions.items() if expiry.visible(siblings.reconcile(vs), now_ms))
    return Slice(tuple(sorted(live)), bound)


class KeyLister:
    def __init__(
        self,
        transport: Transport,
        is_alive: Callable[[str], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._transport = transport
        self._is_alive = is_alive
        self._clock = clock

    async def list_keys(self, req: ListRequest) -> list[Slice]:
        return list(await asyncio.gather(*(self._partition(req, r) for r in req.routes)))

    async def _partition(self, req: ListRequest, route: Route) -> Slice:
        scan = ScanRequest(route.partition, req.keyspace.uid, req.after, req.limit)
        asked = [n for n in route.replicas if self._is_alive(n)]
        calls = (
            self._transport.call(n, KEY_LIST, ListScanRequest(scan, req.prefix), req.timeout_s)
            for n in asked
        )
        replies = await asyncio.gather(*calls, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException) and not isinstance(reply, KvError):
                raise reply
        batches = [r for r in replies if isinstance(r, ScanBatch)]
        need = req.keyspace.read_quorum
        if len(batches) < need:
            failed = "; ".join(str(r) for r in replies if isinstance(r, KvError))
            raise QuorumUnavailable(
                f"partition {route.partition}: {len(batches)} of {len(route.replicas)} "
                f"replicas answered the key listing, {need} needed ({failed or 'down'})",
                retry_after=1.0,
                partition=route.partition,
            )
        return partition_slice(batches, int(self._clock() * 1000))

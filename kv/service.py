"""The request layer between HTTP and the replication modes.

HTTP handlers (kv/http) parse the query and body; this layer takes the current metadata,
lets kv/routing turn the request into a typed, routed request, and hands it to the mode
frontend named by its route — the one step down per request. Keyspace changes go to the
meta group. It raises only typed `KvError`s; the one HTTP table in kv/http/errors.py maps
them.

A node's metadata may lag the meta group (it restarted and is replaying, or it does not
vote and polls): a keyspace created through another node may not be here yet. So a request
naming a keyspace this node does not know waits for a metadata read barrier (`sync`) first,
and answers 404 only if the keyspace is still unknown after it — once a keyspace's creation
was acknowledged, no node answers 404 for it; a node that cannot reach the meta group
answers 503 (retryable) instead.

The first key request after a start waits for that barrier too, whatever it names: a
restarted member's metadata is what its journal had applied (the commit index is stored
late, raft_groups/syncobj_adapter/node_log.py `GroupJournal`), possibly from before a
membership plan or a partition's flip, and a write routed by it would skip a partition's
incoming or new owners (seen in CI: an acknowledged write missing on the node a plan had
just added). Until the barrier succeeds once, key requests answer 503 (retryable).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from kv import auth, listing, plan, routing, switch
from kv.errors import (
    InvalidRequest,
    KeyNotFound,
    KeyspaceConflict,
    NotImplementedYet,
    NotReady,
    Retryable,
    raise_refused,
)
from kv.keyspace import KeyspaceConfig, parse_keyspace, validate_name
from kv.listing import ListRequest, Page, Slice
from kv.meta import Metadata, MoveKey
from kv.routing import DeleteRequest, GetRequest, KeyRequest, Options, PutRequest
from kv.sizes import Size

# The sizes of moving partitions, asked of their owners (kv/sizer.py `PlanSizer`); a
# partition left out is unknown.
Sizer = Callable[[Metadata, Iterable[MoveKey]], Awaitable[Mapping[MoveKey, Size]]]
# An eventual keyspace's keys with siblings (up to a limit), their count: `refuse` (a switch)
Conflicts = Callable[[Metadata, KeyspaceConfig, int, float], Awaitable[tuple[list[str], int]]]
MAX_LISTED_CONFLICTS = 100
LIST_ROUNDS = 4  # scans of every partition one key listing may make


class MetaStore(Protocol):
    @property
    def metadata(self) -> Metadata: ...

    async def change(self, change: dict[str, Any], timeout: float) -> dict[str, Any]: ...

    async def sync(self, timeout: float) -> None:
        """Return once `metadata` holds every change committed before the call."""


class KeyOps(Protocol):
    """One consistency mode's key operations (dynamo_mode.frontend, raft_groups.frontend).

    They receive a request that kv/routing has parsed, validated and routed; they never call
    back into this layer. Replies are the JSON bodies of DESIGN.md §5.
    """

    async def get(self, req: GetRequest) -> dict[str, Any]: ...

    async def put(self, req: PutRequest) -> dict[str, Any]: ...

    async def delete(self, req: DeleteRequest) -> dict[str, Any]: ...

    def replica_state(self, req: KeyRequest) -> dict[str, Any]: ...

    async def list_keys(self, req: ListRequest) -> list[Slice]:
        """One slice per partition of `req.routes` (kv/listing.py)."""

    async def prepare(self, md: Metadata, ks: KeyspaceConfig, timeout: float) -> None:
        """Wait (bounded) until a just-created keyspace can serve through this node."""


class Service:
    def __init__(
        self,
        meta: MetaStore,
        modes: dict[str, KeyOps],
        cluster_info: Callable[[], dict[str, Any]],
        sizer: Sizer | None = None,
        conflicts: Conflicts | None = None,
        migrated_context: Callable[[KeyRequest, int], str] | None = None,
    ) -> None:
        self._conflicts = conflicts  # an eventual keyspace's keys with siblings (a switch)
        # the context of a value read through a switch's frozen state (kv/node_switch.py)
        self._migrated_context = migrated_context
        self._meta = meta
        self._modes = modes
        self.cluster_info = cluster_info
        self._sizer = sizer
        self._confirmed = False  # a metadata read barrier succeeded since the start

    # ------------------------------------------------------------------ keyspaces
    def metadata(self) -> Metadata:
        md = self._meta.metadata
        if not md.bootstrapped:
            raise NotReady("cluster metadata is not bootstrapped yet", retry_after=1.0)
        return md

    def mode_of(self, name: str) -> str:
        """The consistency of keyspace `name`, "none" if there is none (metrics labels)."""
        ks = self._meta.metadata.keyspace(name)
        return ks.consistency if ks is not None else "none"

    def keyspace(self, name: str) -> KeyspaceConfig:
        return routing.keyspace(self.metadata(), name)

    async def current(
        self, name: str, timeout: float, routes: bool = True, fresh: bool = False
    ) -> Metadata:
        """This node's metadata, confirmed by a read barrier if it lacks keyspace `name` or
        has not been confirmed since this node started (module docstring); `fresh`: always.
        `routes=False`: the caller only inspects this node's own replica (no request is
        routed by it), so a known keyspace needs no barrier even before the first one — a
        removed node, cut off from the meta group, still shows what it holds."""
        md = self.metadata()
        validate_name(name)  # a malformed name is a 400 without a barrier
        if not fresh and (self._confirmed or not routes) and md.keyspace(name) is not None:
            return md
        try:
            await self._meta.sync(timeout)
        except Retryable as exc:
            known = "is not in" if md.keyspace(name) is None else "may be stale in"
            raise NotReady(
                f"keyspace {name!r} {known} this node's metadata (epoch {md.epoch}) and the "
                f"meta group could not confirm it: {exc.message}",
                retry_after=exc.retry_after,
            ) from None
        self._confirmed = True
        return self.metadata()

    async def describe_keyspace(self, name: str, timeout: float) -> dict[str, Any]:
        """`GET /v1/keyspaces/{name}`: its configuration and, while it switches, the switch's
        progress (docs/mode_switch.md) — after a read barrier, so it shows every change any
        node acknowledged before (a follower of kvctl polls round-robin)."""
        md = await self.current(name, timeout, fresh=True)
        return switch.described(md.switch, md.partitions, routing.keyspace(md, name))

    def list_keyspaces(self) -> list[dict[str, Any]]:
        md = self.metadata()
        return [switch.described(md.switch, md.partitions, k) for k in md.keyspaces]

    async def put_keyspace(
        self, name: str, body: Any, timeout: float
    ) -> tuple[str, dict[str, Any]]:
        md = self.metadata()
        policy = body.get("siblings") if isinstance(body, dict) else None
        fields = {k: v for k, v in body.items() if k != "siblings"} if policy else body
        config = parse_keyspace(name, fields, len(md.members))
        if config.consistency not in self._modes:
            raise NotImplementedYet(
                f"{config.consistency} keyspaces are not available in this build"
            )
        have = md.keyspace(name)
        if have is not None and have.consistency != config.consistency:
            return await self._start_switch(md, config, policy, timeout)
        if policy is not None:
            raise InvalidRequest("siblings", "applies only to switching a keyspace's consistency")
        change = {"type": "put_keyspace", "keyspace": config.to_dict()}
        outcome = await self._meta.change(change, timeout)
        raise_refused(outcome)
        ks = self.keyspace(name)
        await self._modes[ks.consistency].prepare(self.metadata(), ks, timeout)
        return outcome["status"], ks.to_wire()

    async def _start_switch(
        self, md: Metadata, target: KeyspaceConfig, policy: Any, timeout: float
    ) -> tuple[str, dict[str, Any]]:
        """A consistency change of an existing keyspace starts a live switch."""
        if target.consistency == "eventual" and policy is not None:
            raise InvalidRequest("siblings", "applies only to a switch to linearizable")
        policy = "refuse" if policy is None else policy
        if policy not in switch.POLICIES:
            raise InvalidRequest("siblings", f"must be one of {switch.POLICIES}, got {policy!r}")
        source = routing.keyspace(md, target.name)
        refuse = policy == "refuse" and target.consistency == "linearizable"
        if refuse and self._conflicts is not None and md.switch(source.name) is None:
            keys, count = await self._conflicts(md, source, MAX_LISTED_CONFLICTS, timeout)
            if count:
                raise KeyspaceConflict(
                    f"{count} keys of {source.name!r} hold siblings and the siblings policy "
                    "is 'refuse': resolve them (read, write back with the context) or choose "
                    "'merge-json-list'",
                    keys=keys,
                    count=count,
                )
        change = {"type": "start_switch", "target": target.to_dict(), "policy": policy}
        raise_refused(await self._meta.change(change, timeout))
        md = self.metadata()
        return "switching", switch.described(
            md.switch, md.partitions, routing.keyspace(md, target.name)
        )

    async def cancel_switch(self, name: str, policy: str | None, timeout: float) -> dict[str, Any]:
        """`DELETE /v1/keyspaces/{name}/switch[?siblings=P]`: turn a switch around
        (docs/mode_switch.md "Cancel"); 409 if none is in flight."""
        md = await self.current(name, timeout, fresh=True)
        record, ks = md.switch(name), routing.keyspace(md, name)
        if record is None or record.uid != ks.uid:
            raise KeyspaceConflict(f"keyspace {name!r} has no switch in flight to cancel")
        change = {"type": "cancel_switch", "keyspace": name, "uid": record.uid}
        if policy is not None:
            change["policy"] = policy
        raise_refused(await self._meta.change(change, timeout))
        md = self.metadata()
        return switch.described(md.switch, md.partitions, routing.keyspace(md, name))

    async def delete_keyspace(self, name: str, timeout: float) -> None:
        await self.describe_keyspace(name, timeout)
        outcome = await self._meta.change({"type": "delete_keyspace", "name": name}, timeout)
        raise_refused(outcome)

    # ------------------------------------------------------------------ tokens
    def authenticate(self, header: str | None) -> auth.Token:
        """The token record of an `Authorization` header (kv/auth.py); 401 if none."""
        return auth.authenticate(header, self.metadata().tokens)

    async def create_token(self, body: Any, timeout: float) -> dict[str, Any]:
        """Mint a token; its secret is in this reply only (metadata keeps its hash)."""
        name, role, keyspaces = auth.parse_request(body)
        token, record = auth.mint(name, role, keyspaces)
        change = {"type": "put_token", "token": record.to_dict()}
        raise_refused(await self._meta.change(change, timeout))
        return {"token": token, **record.public()}

    def list_tokens(self) -> list[dict[str, Any]]:
        return [t.public() for t in self.metadata().tokens]

    async def revoke_token(self, token_id: str, timeout: float) -> None:
        outcome = await self._meta.change({"type": "revoke_token", "id": token_id}, timeout)
        if outcome.get("code") == "not_found":
            raise KeyNotFound(str(outcome.get("message")), token=token_id)
        raise_refused(outcome)

    # ------------------------------------------------------------------ membership
    async def membership_plan(self, body: Any) -> dict[str, Any]:
        """Show what the staged changes would do (nothing is changed), each move with the
        size of the partition it copies as its current owner reports it (null if unknown)."""
        md = self.metadata()
        shown = plan.make_plan(md, _changes(body))
        copying = {m.key for m in shown.moves if m.target is not None}
        sizes = await self._sizer(md, copying) if self._sizer is not None and copying else {}
        return shown.sized(sizes).to_wire()

    async def membership_commit(self, body: Any, timeout: float) -> dict[str, Any]:
        fields = routing.check_body(body, {"plan_id", "changes"})
        plan_id = fields.get("plan_id")
        if not isinstance(plan_id, str):
            raise InvalidRequest("plan_id", "is required: the plan_id the plan call returned")
        changes = [c.to_wire() for c in _changes(fields)]
        change = {"type": "commit_plan", "plan_id": plan_id, "changes": changes}
        outcome = await self._meta.change(change, timeout)
        raise_refused(outcome)
        return self.membership_status()

    async def membership_abort(self, body: Any, timeout: float) -> dict[str, Any]:
        plan_id = routing.check_body(body, {"plan_id"}).get("plan_id")
        if not isinstance(plan_id, str):
            raise InvalidRequest("plan_id", "is required: the plan in flight")
        outcome = await self._meta.change({"type": "abort_plan", "plan_id": plan_id}, timeout)
        raise_refused(outcome)
        return self.membership_status()

    def membership_status(self) -> dict[str, Any]:
        md = self.metadata()
        t = md.transition
        if t is None:
            return {"status": "idle", "epoch": md.epoch, "members": [m.id for m in md.members]}
        return {
            "status": "reverting" if t.reverting else "moving",
            "epoch": md.epoch,
            "plan_id": t.plan_id,
            "changes": list(t.changes),
            "moves_pending": len(t.pending),
            "moves_done": len(t.done),
            "pending": [_pending(md, key) for key in sorted(t.pending)],
        }

    # ------------------------------------------------------------------ keys
    def _mode(self, req: KeyRequest) -> KeyOps:
        mode = self._modes.get(req.route.mode)
        if mode is None:
            raise NotImplementedYet(f"{req.route.mode} keyspaces are not available in this build")
        return mode

    async def get_key(self, name: str, key: str, opts: Options) -> dict[str, Any]:
        md = await self.current(name, opts.timeout_s)
        req = routing.get_request(md, name, key, opts)
        if req.source is not None:
            return await self._get_switching(md, req)
        return await self._mode(req).get(req)

    async def _get_switching(self, md: Metadata, req: GetRequest) -> dict[str, Any]:
        """A read of a keyspace switching to eventual (docs/mode_switch.md): the eventual
        replicas' value, or — if they hold nothing of the key, not even a tombstone — the
        frozen source's, or (copied meanwhile) the replicas' again."""
        try:
            return await self._mode(req).get(req)
        except KeyNotFound as exc:
            if exc.details.get("tombstone"):
                raise
            context = exc.details.get("context")
        try:
            found = await self._modes["linearizable"].get(routing.from_source(req, md))
        except KeyNotFound:
            return await self._mode(req).get(req)
        switch = md.switch(req.keyspace.name)
        if self._migrated_context is not None and switch is not None:
            # holds the dot the key's copy gets: a write with it supersedes the copy
            context = self._migrated_context(req, switch.since)
        reply = {"key": req.key, "value": found["value"], "context": context}
        return reply | ({"expires_at": found["expires_at"]} if "expires_at" in found else {})

    async def put_key(self, name: str, key: str, body: Any, opts: Options) -> dict[str, Any]:
        md = await self.current(name, opts.timeout_s)
        req = routing.put_request(md, name, key, body, opts)
        return await self._mode(req).put(req)

    async def delete_key(self, name: str, key: str, body: Any, opts: Options) -> dict[str, Any]:
        md = await self.current(name, opts.timeout_s)
        req = routing.delete_request(md, name, key, body, opts)
        if req.source is None:
            return await self._mode(req).delete(req)
        try:  # switching to eventual: did the key exist, here or in the frozen source?
            seen = await self._get_switching(md, routing.get_request(md, name, key, opts))
            existed = True
            if req.context is None:  # delete what was read, the copy's dot included
                req = dataclasses.replace(req, context=seen.get("context"))
        except KeyNotFound:
            existed = False
        reply = await self._mode(req).delete(req)
        return {**reply, "deleted": existed or bool(reply.get("deleted"))}

    async def list_keys(
        self, name: str, prefix: str, after: str | None, limit: int | None, opts: Options
    ) -> dict[str, Any]:
        """A page of the keyspace's keys in order (kv/listing.py). A page cut short by the
        partitions' bounds (tombstones scanned in eventual mode) is continued, up to
        `LIST_ROUNDS` times, so it is full unless the keyspace has no more."""
        md = await self.current(name, opts.timeout_s)
        req = listing.list_request(md, name, prefix, after, limit, opts.timeout_s)
        mode = self._modes.get(req.keyspace.consistency)
        if mode is None:
            raise NotImplementedYet(f"{req.keyspace.consistency} keyspaces are not available")
        keys: list[str] = []
        page, want = Page((), after), req.limit
        for _ in range(LIST_ROUNDS):
            page = listing.merge(await mode.list_keys(req), req.limit)
            keys.extend(page.keys)
            if page.next is None or len(keys) >= want:
                break
            req = req.following(page.next, want - len(keys))
        return Page(tuple(keys), page.next).to_wire()

    async def replica_state(self, name: str, key: str, timeout: float) -> dict[str, Any]:
        md = await self.current(name, timeout, routes=False)
        req = routing.locate(md, name, key, routing.MAX_TIMEOUT_S)
        return self._mode(req).replica_state(req)


def _pending(md: Metadata, key: MoveKey) -> dict[str, Any]:
    """A pending move as `GET /v1/membership` shows it: the owners serving it now (`from`),
    the owners it moves to (`to`), and the incoming owners that reported it (`ready`)."""
    t = md.transition
    assert t is not None
    mode, n, p = key
    return {
        "mode": mode,
        "replication": n,
        "partition": p,
        "from": list(md.owners(mode, n, p)[0]),
        "to": list(t.chains[p][:n]),
        "ready": sorted(node for *k, node in t.ready if tuple(k) == key),
    }


def _changes(body: Any) -> list[plan.Change]:
    fields = routing.check_body(body, {"changes", "plan_id"})
    raw = fields.get("changes")
    if not isinstance(raw, list):
        raise InvalidRequest("changes", "must be a list of {kind, node, member?, force?}")
    return [plan.Change.from_wire(c) for c in raw]

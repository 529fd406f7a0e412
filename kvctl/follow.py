"""Looking at a plan in flight through the API, once or until it is done (`kvctl status`,
`status --wait`). The join itself is pure (kvctl/status.py); the clock and the sleep are
parameters, so the wait is tested without waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from kv.errors import KvError, Retryable, UnknownOutcome
from kvctl.status import Sample, Status, progress


class Client(Protocol):
    """What a look needs of kv/client.py (`SyncClient`)."""

    def membership_status(self) -> Any: ...

    def cluster(self) -> Any: ...

    def clusters(self, nodes: list[str]) -> Any: ...


def look(client: Client, now: float, since: Sample | None = None) -> Status:
    """GET /v1/membership from any endpoint and, while a plan moves, every member's own
    GET /v1/cluster (a node that does not answer is shown with its error)."""
    membership: dict[str, Any] = client.membership_status()
    views: dict[str, Any] = {}
    if membership.get("status") != "idle":
        members = {m["id"]: m["http"] for m in client.cluster()["members"]}
        answers = client.clusters(list(members.values()))
        views = {n: _view(answers[http]) for n, http in members.items()}
    return progress(membership, views, now, since)


def until_idle(
    client: Client,
    deadline: float,
    interval: float,
    show: Callable[[Status], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Status:
    """Look every `interval` seconds until no plan is in flight or `deadline` seconds
    passed; `show` sees every look. Rates are measured since the first look at the same
    plan. A look that fails retryably, or with an unknown outcome, is tried again until
    the deadline, when its error is raised."""
    end = clock() + deadline
    first: Sample | None = None
    while True:
        try:
            st = look(client, clock(), first)
        except (Retryable, UnknownOutcome):
            if clock() >= end:
                raise
        else:
            if first is None or first.plan_id != st.plan_id:
                first = st.sample()
            show(st)
            if st.idle or clock() >= end:
                return st
        sleep(max(0.0, min(interval, end - clock())))


def _view(answer: Any) -> Any:
    if isinstance(answer, KvError):
        return " ".join(answer.message.split())
    return answer if isinstance(answer, dict) else str(answer)

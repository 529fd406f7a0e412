"""`kvctl cluster status|health`: a look at the cluster. Registered on the `kvctl` group by
kvctl/cli.py; the `Session` is the context object it made."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from kvctl import keys, render

if TYPE_CHECKING:
    from kvctl.cli import Session

pass_session = click.pass_obj


@click.group()
def cluster() -> None:
    """Look at the cluster."""


@cluster.command("status")
@pass_session
def cluster_status(session: Session) -> None:
    """Members (with their status as gossip sees it), the meta group's voters and leader."""
    view: dict[str, Any] = session.client().cluster()
    session.emit(view, render.cluster(view))


@cluster.command("health")
@click.option(
    "--cluster",
    "whole",
    is_flag=True,
    help="Every member (and joining node) the cluster lists, not only --endpoints.",
)
@pass_session
def cluster_health(session: Session, whole: bool) -> None:
    """GET /v1/health of every endpoint, one line each.

    Each endpoint is asked once, all at once. Exit 0 when all answer `ok`; 3 when one is
    down (no answer, or a 503 while it boots); 9 when all answer but one is `joining` or
    `degraded`.

    \b
    Example: kvctl --endpoints 10.0.0.1:7001,10.0.0.2:7001 cluster health
             kvctl cluster health --cluster     # every member the cluster lists
    """
    client = session.client()
    endpoints = list(session.endpoints)
    if whole:
        view: dict[str, Any] = client.cluster()
        endpoints = [m["http"] for m in [*view.get("members", ()), *view.get("joining", ())]]
    answers = client.healths(endpoints)
    rows = [keys.health_row(e, answers[e]) for e in endpoints]
    session.emit({"endpoints": rows}, keys.health_lines(rows))
    verdict = keys.health_verdict(rows)
    if verdict is not None:
        raise verdict

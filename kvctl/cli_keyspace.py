"""`kvctl keyspace`: create, list, describe, delete, and switch a keyspace's consistency
live (docs/mode_switch.md). Registered on the `kvctl` group by kvctl/cli.py; the `Session`
is the context object it made."""

from __future__ import annotations

import functools
import json
import time
from typing import TYPE_CHECKING, Any

import click

from kvctl.cli_progress import Progress
from kvctl.errors import NOT_DONE, KvctlError

if TYPE_CHECKING:
    from kvctl.cli import Session

pass_session = click.pass_obj
POLL_S = 0.5


@click.group()
def keyspace() -> None:
    """Create, list, describe, delete, switch keyspaces and cancel a switch."""


def _line(ks: dict[str, Any]) -> str:
    switch = ks.get("switch")
    moving = ""
    if switch and switch["state"] == "cancelling" and switch["to"] == "eventual":
        moving = (
            f"  cancelling: copy {switch['partitions_done']}/{switch['partitions']}, "
            "then back to linearizable"
        )
    elif switch and switch["state"] == "cancelling":
        moving = f"  cancelling: {switch['partitions_done']}/{switch['partitions']} back"
    elif switch:
        moving = (
            f"  switching to {switch['to']}: {switch['partitions_done']}/{switch['partitions']}"
        )
    return f"{ks['name']}  {ks['consistency']}  replication {ks['replication']}{moving}"


@keyspace.command("list")
@pass_session
def keyspace_list(session: Session) -> None:
    """Every keyspace, one per line."""
    found = session.client().list_keyspaces()
    session.emit({"keyspaces": found}, [_line(k) for k in found])


@keyspace.command("describe")
@click.argument("name")
@pass_session
def keyspace_describe(session: Session, name: str) -> None:
    """Keyspace NAME's configuration (and a switch in progress)."""
    ks = session.client().get_keyspace(name)
    session.emit(ks, [json.dumps(ks, indent=2)])


@keyspace.command("create")
@click.argument("name")
@click.option("--consistency", type=click.Choice(["eventual", "linearizable"]), required=True)
@click.option("--replication", type=int, default=3, show_default=True)
@click.option("--read-quorum", type=int, help="Eventual: R (default: a majority).")
@click.option("--write-quorum", type=int, help="Eventual: W (default: a majority).")
@pass_session
def keyspace_create(session: Session, /, name: str, **config: Any) -> None:
    """Create keyspace NAME (or change its eventual quorums).

    \b
    Example: kvctl keyspace create carts --consistency eventual --replication 3
    """
    body = {k: v for k, v in config.items() if v is not None}
    ks = session.client().create_keyspace(name, **body)
    session.emit(ks, [_line(ks)])


@keyspace.command("delete")
@click.argument("name")
@pass_session
def keyspace_delete(session: Session, name: str) -> None:
    """Delete keyspace NAME and its data."""
    session.client().delete_keyspace(name)
    session.emit({"deleted": name}, [f"deleted {name}"])


@keyspace.command("switch")
@click.argument("name")
@click.option("--to", "target", type=click.Choice(["linearizable", "eventual"]), required=True)
@click.option(
    "--siblings",
    type=click.Choice(["refuse", "lww", "merge-json-list"]),
    help="Keys with siblings (to linearizable): refuse (default), lww or merge-json-list.",
)
@click.option("--replication", type=int, help="The target's replication (default: as now).")
@click.option("--no-wait", is_flag=True, help="Start it and return; `describe` shows progress.")
@click.option("--deadline", type=float, default=3600.0, show_default=True, metavar="SECONDS")
@pass_session
def keyspace_switch(
    session: Session,
    name: str,
    target: str,
    siblings: str | None,
    replication: int | None,
    no_wait: bool,
    deadline: float,
) -> None:
    """Switch keyspace NAME's consistency while it serves, then follow it to the end.

    \b
    Example: kvctl keyspace switch carts --to linearizable --siblings merge-json-list
    """
    client = session.client()
    now = client.get_keyspace(name)
    if now["consistency"] == target and "switch" not in now:
        raise KvctlError(f"keyspace {name!r} is already {target}; nothing to switch")
    body: dict[str, Any] = {"consistency": target}
    body["replication"] = replication or now["replication"]
    if siblings:
        body["siblings"] = siblings
    started = client.create_keyspace(name, **body)
    if no_wait:
        session.emit(started, [_line(started)])
        return
    done = _follow(session, name, target, time.monotonic() + deadline)
    session.emit(done, [_line(done)])


@keyspace.command("cancel")
@click.argument("name")
@click.option(
    "--siblings",
    type=click.Choice(["lww", "merge-json-list"]),
    help="Cancelling a switch to eventual: how the switch back resolves siblings (lww).",
)
@click.option("--no-wait", is_flag=True, help="Cancel and return; `describe` shows progress.")
@click.option("--deadline", type=float, default=3600.0, show_default=True, metavar="SECONDS")
@pass_session
def keyspace_cancel(
    session: Session, name: str, siblings: str | None, no_wait: bool, deadline: float
) -> None:
    """Cancel keyspace NAME's switch and follow it back to its old mode: every write
    acknowledged in between is kept. A switch to eventual finishes its copy, then switches
    back to linearizable.

    \b
    Example: kvctl keyspace cancel carts
    """
    turned = session.client().cancel_switch(name, siblings)
    if no_wait:
        session.emit(turned, [_line(turned)])
        return
    done = _follow(session, name, turned["consistency"], time.monotonic() + deadline)
    session.emit(done, [_line(done)])


def _follow(session: Session, name: str, target: str, end: float) -> dict[str, Any]:
    """Poll until the switch is over, showing its progress (kvctl/cli_progress.py)."""
    client = session.client()
    view: Progress | None = None
    done_before = -1
    try:
        while time.monotonic() < end:
            ks: dict[str, Any] = client.get_keyspace(name)
            switch = ks.get("switch")
            if switch is None:
                if ks["consistency"] != target:
                    raise KvctlError(f"the switch of {name!r} ended in {ks['consistency']}")
                return ks
            done, total = switch["partitions_done"], switch["partitions"]
            label = f"{name} → {switch['to']}"
            if view is None:
                view = Progress(label, session.as_json)
            elif done < done_before:  # a new phase: a cancel turned it, or the switch back began
                view.restart(label)
            view.show(done, total, functools.partial(_progress, switch))
            done_before = done
            time.sleep(POLL_S)
    finally:
        if view is not None:
            view.close()
    raise KvctlError(f"the switch of {name!r} is still running", NOT_DONE)


def _progress(switch: dict[str, Any], elapsed: float) -> str:
    """One line of a switch's progress: partitions and keys moved, rate and ETA."""
    done, total, keys = switch["partitions_done"], switch["partitions"], switch.get("keys", 0)
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f", about {(total - done) / rate:.0f}s left" if rate > 0 else ""
    key_rate = f", {keys / elapsed:.0f} keys/s" if elapsed > 0 else ""
    moved = (
        "back" if switch.get("state") == "cancelling" and switch["to"] == "linearizable" else "done"
    )
    return (
        f"{done}/{total} partitions {moved}, {keys} keys ({rate:.1f} partitions/s{key_rate}{eta})"
    )

"""The kvctl commands — with kvctl/cli_*.py, the only click importers (DESIGN.md §8.6).

A command parses its options, calls the cluster through kv/client.py, hands the replies to
the pure modules (kvctl/status.py, kvctl/render.py) and prints text, or JSON with `--json`.
Every failure reaches `Kvctl.invoke`, which turns it into a one-line message on stderr and
an exit code through kvctl/errors.py — the one place that mapping lives. New command groups
(keys, keyspaces, ...) take the `Session` from the context the same way.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from kv.client import SyncClient
from kv.errors import PlanConflict
from kv.meta import Member
from kv.plan import Change
from kvctl import (
    cli_backup,
    cli_cluster,
    cli_keys,
    cli_keyspace,
    cli_tokens,
    errors,
    follow,
    render,
    staged,
)
from kvctl.errors import KvctlError
from kvctl.help import HELP
from kvctl.status import Status

DEFAULT_ENDPOINTS = "127.0.0.1:7001"  # node n1 of `ops/cluster up`
MAX_SERVER_TIMEOUT_S = 60.0  # the API's limit on timeout_ms (kv/routing.py MAX_TIMEOUT_S)


# ---------------------------------------------------------------------- the session
@dataclass
class Session:
    """The global options, and the one client every command of a run shares."""

    endpoints: tuple[str, ...]
    as_json: bool
    timeout: float
    state_file: Path
    token: str | None = None
    cacert: str | None = None
    _client: SyncClient | None = field(default=None, repr=False)

    def client(self) -> SyncClient:
        if self._client is None:
            options = {"timeout": self.timeout, "token": self.token, "ca": self.cacert}
            self._client = SyncClient(self.endpoints, **options)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def server_timeout_ms(self) -> int:
        """A deadline for the node that ends before ours, so its 504 comes back to us."""
        return max(1, int(min(self.timeout * 0.8, MAX_SERVER_TIMEOUT_S) * 1000))

    def emit(self, data: Any, lines: Iterable[str]) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            for line in lines:
                click.echo(line)


class Kvctl(click.Group):
    """Maps every failure of a command to a one-line message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            found = errors.failure(exc, ctx.invoked_subcommand or "")
            if found is None:
                raise
            code, message = found
            click.echo(f"kvctl: {message}", err=True)
            ctx.exit(code)


def _address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{text!r} is not HOST:PORT")
    return text


def _endpoints(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    found = tuple(e.strip() for e in value.split(",") if e.strip())
    if not found:
        raise click.BadParameter("give at least one HOST:PORT")
    for e in found:
        _address(e.removeprefix("http://").removeprefix("https://").rstrip("/"))
    return found


def _address_option(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    return _address(value)


def _state_file(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path:
    return value if value is not None else Path.home() / ".kvctl" / "plan.json"


@click.group(
    cls=Kvctl,
    help=HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--endpoints",
    envvar="KV_ENDPOINTS",
    default=DEFAULT_ENDPOINTS,
    show_default=True,
    callback=_endpoints,
    metavar="HOST:PORT,...",
    help="Nodes to talk to (any of them; the next is tried when one fails). Env KV_ENDPOINTS.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long one request may take.",
)
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KVCTL_STATE",
    callback=_state_file,
    show_default="~/.kvctl/plan.json",
    help="Where staged membership changes are kept. Env KVCTL_STATE.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="KV_TOKEN_FILE",
    help="A client token (auth on; e.g. DIR/admin.token). Env KV_TOKEN_FILE, or KV_TOKEN.",
)
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False),
    envvar="KV_CACERT",
    help="The cluster CA (TLS on; e.g. DIR/ca.pem): talk https. Env KV_CACERT.",
)
@click.pass_context
def cli(ctx: click.Context, /, token_file: Path | None, **options: Any) -> None:
    token = token_file.read_text().strip() if token_file else os.environ.get("KV_TOKEN")
    ctx.obj = Session(**options, token=token or None)
    ctx.call_on_close(ctx.obj.close)


pass_session = click.make_pass_decorator(Session)


# ---------------------------------------------------------------------- plan
@cli.group()
def plan() -> None:
    """Stage membership changes and show the plan they make."""


def _stage(session: Session, change: Change) -> None:
    now = staged.load(session.state_file).staging(change)
    staged.save(session.state_file, now)
    session.emit({"changes": list(now.changes)}, render.staged(now.changes, now.plan_id))


@plan.command("add")
@click.argument("node_id")
@click.option("--http", required=True, callback=_address_option, metavar="HOST:PORT")
@click.option("--raft", required=True, callback=_address_option, metavar="HOST:PORT")
@pass_session
def plan_add(session: Session, node_id: str, http: str, raft: str) -> None:
    """Stage adding node NODE_ID, which advertises these HTTP and Raft addresses.

    Start the node first with --seeds (it waits as `joining` until the plan commits)."""
    _stage(session, Change("add", node_id, Member(node_id, http, raft)))


@plan.command("remove")
@click.argument("node_id")
@click.option("--force", is_flag=True, help="The node is gone for good: rebuild from the rest.")
@pass_session
def plan_remove(session: Session, node_id: str, force: bool) -> None:
    """Stage removing member NODE_ID (its replicas move to the others first)."""
    _stage(session, Change("remove", node_id, force=force))


@plan.command("replace")
@click.argument("old")
@click.argument("new")
@click.option("--http", required=True, callback=_address_option, metavar="HOST:PORT")
@click.option("--raft", required=True, callback=_address_option, metavar="HOST:PORT")
@pass_session
def plan_replace(session: Session, old: str, new: str, http: str, raft: str) -> None:
    """Stage replacing member OLD by node NEW, which takes exactly OLD's places."""
    _stage(session, Change("replace", old, Member(new, http, raft)))


@plan.command("show")
@pass_session
def plan_show(session: Session) -> None:
    """Ask the cluster what the staged changes would move, with the bytes each move is
    expected to copy (nothing changes yet)."""
    now = staged.load(session.state_file)
    if not now.changes:
        raise KvctlError("nothing staged: stage changes with `kvctl plan add|remove|replace`")
    shown = session.client().membership_plan(list(now.changes))
    staged.save(session.state_file, now.shown(str(shown["plan_id"])))
    session.emit(shown, render.plan(shown))


@plan.command("clear")
@pass_session
def plan_clear(session: Session) -> None:
    """Drop the staged changes."""
    dropped = staged.clear(session.state_file)
    text = "staged changes dropped" if dropped else "nothing was staged"
    session.emit({"cleared": dropped}, [text])


# ---------------------------------------------------------------------- commit, abort
@cli.command()
@pass_session
def commit(session: Session) -> None:
    """Start the plan `kvctl plan show` last showed, exactly as shown."""
    now = staged.load(session.state_file)
    if not now.changes:
        raise KvctlError("nothing staged: stage changes with `kvctl plan add|remove|replace`")
    if now.plan_id is None:
        raise KvctlError("run `kvctl plan show` first: a commit names the plan you saw")
    client = session.client()
    reply = client.membership_commit(
        now.plan_id, list(now.changes), timeout_ms=session.server_timeout_ms()
    )
    staged.clear(session.state_file)
    pending = reply.get("moves_pending", 0)
    session.emit(
        reply,
        [
            f"committed plan {now.plan_id}: {pending} moves pending",
            "follow it with `kvctl status --wait`" if pending else "nothing to move: done",
        ],
    )


@cli.command()
@pass_session
def abort(session: Session) -> None:
    """Stop the plan in flight: moves not done yet are dropped, done ones move back."""
    client = session.client()
    now = client.membership_status()
    if now.get("status") != "moving":
        raise KvctlError(
            "no plan in flight to abort"
            if now.get("status") == "idle"
            else f"plan {now.get('plan_id')} is already being reverted"
        )
    try:
        reply = client.membership_abort(now["plan_id"], timeout_ms=session.server_timeout_ms())
    except PlanConflict as exc:
        if exc.details.get("reason") != "plan_changed":
            raise
        raise KvctlError(f"the plan in flight changed ({exc.message}); look again") from None
    back = reply.get("moves_pending", 0)
    session.emit(reply, [f"aborted plan {now['plan_id']}: {back} moves go back"])


# ---------------------------------------------------------------------- status
@cli.command()
@click.option("--wait", "--watch", "wait", is_flag=True, help="Follow the plan until it is done.")
@click.option(
    "--timeout",
    "deadline",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    metavar="SECONDS",
    help="With --wait: give up (exit 5, saying what is stuck) after this long.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="With --wait: time between looks.",
)
@pass_session
def status(session: Session, wait: bool, deadline: float, interval: float) -> None:
    """The plan in flight: each moving partition (from → to), its state, keys pulled and
    bytes copied of the bytes expected, rates and ETA (with --wait), and anything stuck
    with its reason."""
    if not wait:
        st = follow.look(session.client(), time.monotonic())
        session.emit(st.to_wire(), render.status(st))
        return
    display = _Display(session.as_json)
    with display.stack:
        st = follow.until_idle(session.client(), deadline, interval, display.show)
    session.emit(st.to_wire(), render.status(st))
    if not st.idle:
        raise KvctlError(
            f"plan {st.plan_id} not done after {deadline:.0f}s: {render.first_stuck(st)}",
            errors.NOT_DONE,
        )


class _Display:
    """What `status --wait` shows while it waits: a progress bar of the moves done on a
    terminal, a line per change of progress otherwise, nothing with --json (the last
    status is printed when the wait ends)."""

    def __init__(self, as_json: bool) -> None:
        self.mode = "quiet" if as_json else ("bar" if sys.stdout.isatty() else "lines")
        self.shown: tuple[Any, ...] = ()
        self.stack = ExitStack()
        self.bar: Any = None

    def show(self, st: Status) -> None:
        if st.idle:  # the wait ends: the caller prints it
            return
        if self.mode == "lines":
            key = (st.state, st.plan_id, st.moves_done, st.moves_pending, st.stuck)
            if key != self.shown:
                self.shown = key
                click.echo(render.summary(st))
        elif self.mode == "bar":
            self._bar(st)

    def _bar(self, st: Status) -> None:
        total = st.moves_done + st.moves_pending
        if self.bar is None or self.shown != (st.plan_id, total):
            self.stack.close()  # a new plan (or a revert): a new bar
            self.shown = (st.plan_id, total)
            bar = click.progressbar(
                length=total,
                label=f"plan {st.plan_id} {st.state}",
                show_pos=True,
                item_show_func=lambda text: text,
            )
            self.bar = self.stack.enter_context(bar)
        note = render.first_stuck(st) if st.stuck or st.unreachable else ""
        self.bar.update(max(0, st.moves_done - self.bar.pos), note[:60])


for command in (
    *cli_keys.COMMANDS,
    *cli_backup.COMMANDS,
    cli_keyspace.keyspace,
    cli_cluster.cluster,
    cli_tokens.token,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="kvctl")

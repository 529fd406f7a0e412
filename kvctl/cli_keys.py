"""`kvctl get|put|del|ls`: a keyspace's keys, over the key API (README "Talk to it",
docs/listing.md). Registered on the `kvctl` group by kvctl/cli.py; the `Session` is the
context object it made. Parsing and rendering are kvctl/keys.py (pure); a failure is
mapped to its exit code by kvctl/errors.py, as for every command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from kv.listing import MAX_LIMIT
from kvctl import keys

if TYPE_CHECKING:
    from kvctl.cli import Session

pass_session = click.pass_obj

_CONTEXT = click.option(
    "--context", help="Eventual: the context a `get --json` returned (supersedes what it saw)."
)
_IF_VERSION = click.option(
    "--if-version",
    type=click.IntRange(min=0),
    help="Linearizable: only if the key is at this version (0: only if absent).",
)
_REQUEST_ID = click.option(
    "--request-id",
    help="Linearizable: send a write again with the same id and it is applied at most once.",
)
_TTL = click.option(
    "--ttl",
    "ttl_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds until the key expires (then it reads as absent; docs/ttl.md).",
)


@click.command("get")
@click.argument("keyspace")
@click.argument("key")
@pass_session
def get(session: Session, keyspace: str, key: str) -> None:
    """Print KEY's value in KEYSPACE as JSON.

    One line of JSON — or, when concurrent writes left siblings (eventual), one line per
    sibling. `--json` prints the whole reply, with the `context` (eventual) or `version`
    (linearizable). A key that does not exist exits 6.

    \b
    Example: kvctl get carts alice
             kvctl --json get carts alice     # {"key": ..., "value": ..., "context": ...}
    """
    reply = session.client().get(keyspace, key)
    session.emit(reply, keys.value_lines(reply))


@click.command("put")
@click.argument("keyspace")
@click.argument("key")
@click.argument("value")
@_CONTEXT
@_IF_VERSION
@_REQUEST_ID
@_TTL
@pass_session
def put(session: Session, /, keyspace: str, key: str, value: str, **conditions: Any) -> None:
    """Write VALUE (JSON, else a string) to KEY in KEYSPACE.

    VALUE is read as JSON; text that is not valid JSON is taken as a string. Prints OK
    (and the key's new version, linearizable). A failed --if-version exits 8. With --ttl
    the key expires that many seconds later; a write without it never expires.

    \b
    Example: kvctl put carts alice '["milk", "eggs"]'
             kvctl put carts bob hello              # the string "hello"
             kvctl put carts n '"42"'               # the string "42"; 42 is a number
             kvctl put accounts alice 100 --if-version 0 --request-id w-17
             kvctl put sessions s-81 '{"user": "bob"}' --ttl 3600
    """
    reply = session.client().put(keyspace, key, keys.parse_value(value), **_given(conditions))
    session.emit(reply, keys.written(reply))


@click.command("del")
@click.argument("keyspace")
@click.argument("key")
@_CONTEXT
@_IF_VERSION
@_REQUEST_ID
@pass_session
def delete(session: Session, /, keyspace: str, key: str, **conditions: Any) -> None:
    """Delete KEY in KEYSPACE.

    Exits 0 whether or not the key existed; the line printed says which. Eventual: without
    --context it deletes what a quorum read sees.

    \b
    Example: kvctl del carts alice
             kvctl del accounts alice --if-version 3
    """
    reply = session.client().delete(keyspace, key, **_given(conditions))
    session.emit(reply, keys.deleted(key, reply))


@click.command("ls")
@click.argument("keyspace")
@click.option("--prefix", default="", help="Only keys that start with it.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many keys (default all).")
@click.option(
    "--page-size",
    type=click.IntRange(1, MAX_LIMIT),
    default=MAX_LIMIT,
    show_default=True,
    help="Keys asked for per request.",
)
@pass_session
def ls(session: Session, keyspace: str, prefix: str, limit: int | None, page_size: int) -> None:
    """List KEYSPACE's keys, one per line.

    In UTF-8 byte order, following the pages to the end or to --limit. `--json` prints one
    JSON list. Keys written or deleted while it runs may or may not be listed
    (docs/listing.md).

    \b
    Example: kvctl ls carts --prefix al
             kvctl --json ls carts --limit 10
    """
    client = session.client()

    def fetch(after: str | None, n: int) -> Mapping[str, Any]:
        page: Mapping[str, Any] = client.list_keys(keyspace, prefix=prefix, after=after, limit=n)
        return page

    found = keys.walk(fetch, limit, page_size)
    if session.as_json:
        session.emit(list(found), [])
        return
    for key in found:  # printed as the pages come: a large keyspace is not held in memory
        click.echo(key)


def _given(conditions: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in conditions.items() if v is not None}


COMMANDS = (get, put, delete, ls)

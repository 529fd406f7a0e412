"""`kvctl token`: client tokens (kv/auth.py; every command needs an admin token). Registered
on the `kvctl` group by kvctl/cli.py; the `Session` is the context object it made."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from kvctl import render

if TYPE_CHECKING:
    from kvctl.cli import Session

pass_session = click.pass_obj


# ---------------------------------------------------------------------- tokens
@click.group()
def token() -> None:
    """Create, list and revoke client tokens (kv/auth.py; needs an admin token)."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["read", "write", "admin"]), required=True)
@click.option("--keyspace", "keyspaces", multiple=True, help="Only this one (repeatable).")
@pass_session
def token_create(session: Session, name: str, role: str, keyspaces: tuple[str, ...]) -> None:
    """Mint token NAME and print it, once (the cluster keeps only its hash)."""
    made = session.client().create_token(name, role, list(keyspaces) or None)
    session.emit(made, [str(made["token"])])


@token.command("list")
@pass_session
def token_list(session: Session) -> None:
    """Every token's id, name, role and keyspaces (never the secrets)."""
    tokens: list[dict[str, Any]] = session.client().list_tokens()
    session.emit({"tokens": tokens}, render.tokens(tokens))


@token.command("revoke")
@click.argument("token_id")
@pass_session
def token_revoke(session: Session, token_id: str) -> None:
    """Revoke token TOKEN_ID (as `token list` shows it); it stops working at once."""
    session.client().revoke_token(token_id)
    session.emit({"revoked": token_id}, [f"revoked {token_id}"])

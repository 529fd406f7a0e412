"""`kvctl backup` and `kvctl restore` (docs/backup.md): the command line of kvctl/backup.py.
Registered on the `kvctl` group by kvctl/cli.py; the `Session` is the context object it
made. Progress: a bar on a terminal, else a line every few seconds, on stderr."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kvctl import backup as backups
from kvctl.cli_progress import Progress

if TYPE_CHECKING:
    from kvctl.cli import Session

pass_session = click.pass_obj


def _shown(session: Session, label: str, unit: str) -> tuple[Progress, Callable[..., None]]:
    """A `Progress` and the callback kvctl/backup.py reports to: (done, total, records)."""
    view = Progress(label, session.as_json)

    def report(done: int, total: int, records: int) -> None:
        def line(seconds: float) -> str:
            rate = records / max(seconds, 1e-9)
            return f"{label}: {done}/{total} {unit}, {records} records ({rate:.0f}/s)"

        view.show(done, total, line)

    return view, report


@click.command("backup")
@click.option("--keyspace", required=True, help="The keyspace to back up.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The archive to write (replaced only once the backup is complete).",
)
@pass_session
def backup_command(session: Session, keyspace: str, out: Path) -> None:
    """Back up KEYSPACE, while it serves, into a checksummed archive: linearizable, each
    partition's group at one applied index; eventual, every version with its causal
    metadata (docs/backup.md). Every write acknowledged before the backup started is in it.

    \b
    Example: kvctl backup --keyspace carts --out carts.kvb
    """
    view, report_progress = _shown(session, f"backup {keyspace}", "partitions")
    try:
        summary = backups.backup(session.client(), keyspace, out, report_progress)
    finally:
        seconds = view.close()
    report = {
        "keyspace": keyspace,
        "file": str(out),
        "consistency": summary.header.consistency,
        "partitions": summary.header.partitions,
        "frames": summary.frames,
        "records": summary.records,
        "bytes": out.stat().st_size,
        "seconds": round(seconds, 3),
    }
    line = f"backed up {keyspace}: {summary.records} records, {report['bytes']} bytes to {out}"
    session.emit(report, [f"{line} in {seconds:.1f}s"])


@click.command("restore")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--keyspace", required=True, help="The keyspace to create and fill.")
@click.option(
    "--resume",
    is_flag=True,
    help="KEYSPACE exists from a restore that stopped: finish it (imports are safe to resend).",
)
@pass_session
def restore_command(session: Session, archive: Path, keyspace: str, resume: bool) -> None:
    """Restore ARCHIVE into a new keyspace KEYSPACE, created with the archived
    configuration, in this cluster or another. The whole archive is verified first: a
    damaged one is refused (exit 10) and nothing is created or written.

    \b
    Example: kvctl restore carts.kvb --keyspace carts2
    """
    view, report_progress = _shown(session, f"restore {keyspace}", "records")
    try:
        summary = backups.restore(session.client(), archive, keyspace, report_progress, resume)
    finally:
        seconds = view.close()
    report = {
        "keyspace": keyspace,
        "file": str(archive),
        "from": summary.header.keyspace,
        "consistency": summary.header.consistency,
        "records": summary.records,
        "seconds": round(seconds, 3),
    }
    line = f"restored {summary.records} records of {summary.header.keyspace} into {keyspace}"
    session.emit(report, [f"{line} in {seconds:.1f}s"])


COMMANDS = (backup_command, restore_command)

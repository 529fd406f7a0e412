"""`kvctl backup` and `kvctl restore` (docs/backup.md): the command line of kvctl/backup.py.
Registered on the `kvctl` group by kvctl/cli.py; the `Session` is the context object it
made. Progress: a bar on a terminal, else a line every few seconds, on stderr."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kvctl import backup as backups

if TYPE_CHECKING:
    from kvctl.cli import Session

pass_session = click.pass_obj
LINE_EVERY_S = 2.0


class _Shown:
    """The progress of one run: a click progress bar on a terminal (not with --json),
    else a line on stderr at most every LINE_EVERY_S seconds, and the last one."""

    def __init__(self, session: Session, label: str, unit: str) -> None:
        self.label, self.unit = label, unit
        self.began = self.last = time.monotonic()
        self.bar: Any = None
        self.tty = sys.stderr.isatty() and not session.as_json
        self.quiet = session.as_json
        self.shown = -1

    def __call__(self, done: int, total: int, records: int) -> None:
        if done == self.shown:
            return
        if self.tty:
            if self.bar is None:
                self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.update(done - max(self.shown, 0))
        elif not self.quiet and (done == total or time.monotonic() - self.last >= LINE_EVERY_S):
            self.last = time.monotonic()
            rate = records / max(self.last - self.began, 1e-9)
            line = f"{self.label}: {done}/{total} {self.unit}, {records} records ({rate:.0f}/s)"
            click.echo(line, err=True)
        self.shown = done

    def close(self) -> float:
        if self.bar is not None:
            self.bar.render_finish()
        return time.monotonic() - self.began


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
    shown = _Shown(session, f"backup {keyspace}", "partitions")
    try:
        summary = backups.backup(session.client(), keyspace, out, shown)
    finally:
        seconds = shown.close()
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
    shown = _Shown(session, f"restore {keyspace}", "records")
    try:
        summary = backups.restore(session.client(), archive, keyspace, shown, resume)
    finally:
        seconds = shown.close()
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

"""`kvctl backup` and `kvctl restore` without the command line (docs/backup.md): the walk
over a keyspace's partitions into an archive (kvctl/archive.py), and an archive's records
back into a new keyspace. The client, the clock and the progress report are parameters.

A backup is written to a hidden temporary file next to FILE, synced, and renamed to FILE
only once its trailer is written: a failed backup never leaves a file that looks complete.
A restore verifies the whole archive before it sends anything: a damaged one creates no
keyspace and writes nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from kv.batching import chunks
from kv.errors import KeyspaceNotFound, Retryable, UnknownOutcome
from kvctl import archive
from kvctl.archive import ArchiveError, Frame, Header, Summary
from kvctl.errors import DAMAGED, REFUSED, UNAVAILABLE, UNKNOWN, KvctlError

FRAME_RECORDS = 1000  # records per archive frame (a partition's page is split into frames)
IMPORT_RECORDS = 1000  # records per import request (the API's limit)
IMPORT_BYTES = 4 << 20  # about this much JSON per import request (the body limit is 8 MiB)
RETRY_FOR_S = 60.0  # how long a batch is sent again while the cluster answers 503 / 504

Progress = Callable[[int, int, int], None]  # (done, total, records so far)


class Client(Protocol):
    """What backup and restore need of kv/client.py (`SyncClient`)."""

    def get_keyspace(self, name: str) -> Any: ...

    def create_keyspace(self, name: str, **config: Any) -> Any: ...

    def export_partition(self, ks: str, partition: int, **query: Any) -> Any: ...

    def import_records(self, ks: str, records: list[Any], **query: Any) -> Any: ...


def backup(
    client: Client,
    keyspace: str,
    out: Path,
    progress: Progress,
    clock: Callable[[], float] = time.time,
) -> Summary:
    """Every partition of `keyspace`, in order, into the archive `out`; progress per
    partition. The header's `created_at` is when the first page was asked for: every write
    acknowledged before it is in the archive."""
    started = int(clock() * 1000)
    first = client.export_partition(keyspace, 0)
    config, partitions = first["config"], first["partitions"]
    header = Header(keyspace, config["consistency"], config, partitions, started)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as f:
            writer, records = archive.Writer(f, header), 0
            for p in range(partitions):
                page = first if p == 0 else client.export_partition(keyspace, p)
                if (page["config"], page["partitions"]) != (config, partitions):
                    raise KvctlError(f"keyspace {keyspace!r} changed during the backup; run again")
                for frame in _frames(p, page):
                    writer.frame(frame)
                records += len(page["records"])
                progress(p + 1, partitions, records)
            summary = writer.close()
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, out)
    except OSError as exc:
        raise KvctlError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return summary


def _frames(partition: int, page: dict[str, Any]) -> Iterator[Frame]:
    """A partition's page as frames of at most FRAME_RECORDS (one, empty, if it has none)."""
    records, applied = page["records"], page.get("applied_index")
    for start in range(0, max(len(records), 1), FRAME_RECORDS):
        yield Frame(partition, applied, records[start : start + FRAME_RECORDS])


def verify(path: Path) -> Summary:
    """The archive at `path` checked whole; a damaged one is a KvctlError (DAMAGED)."""
    try:
        with open(path, "rb") as f:
            return archive.verify(f)
    except ArchiveError as exc:
        raise KvctlError(f"{path}: {exc}; nothing was restored", DAMAGED) from None
    except OSError as exc:
        raise KvctlError(f"cannot read {path}: {exc.strerror or exc}") from None


def restore(
    client: Client,
    path: Path,
    keyspace: str,
    progress: Progress,
    resume: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Summary:
    """Verify the archive, create `keyspace` with its configuration (refused if it exists,
    unless `resume` and its configuration is the archive's), then import every record."""
    summary = verify(path)
    config = summary.header.config
    _create(client, keyspace, config, resume)
    done = 0
    try:
        with open(path, "rb") as f:
            for frame in archive.frames(f):  # each section checked again as it is read
                for batch in batches(frame.records):
                    _send(client, keyspace, batch, clock, sleep)
                    done += len(batch)
                    progress(done, summary.records, done)
    except ArchiveError as exc:  # the file changed after it was verified
        raise KvctlError(f"{path}: {exc}; {_stopped(keyspace, done)}", DAMAGED) from None
    except (Retryable, UnknownOutcome) as exc:  # still so after RETRY_FOR_S
        raise KvctlError(f"{exc}; {_stopped(keyspace, done)}", exc_code(exc)) from None
    progress(done, summary.records, done)
    return summary


def exc_code(exc: Exception) -> int:
    """Exit 4 when the last batch's outcome is unknown, else 3 (unavailable)."""
    return UNKNOWN if isinstance(exc, UnknownOutcome) else UNAVAILABLE


def _stopped(keyspace: str, done: int) -> str:
    return (
        f"the restore stopped after {done} records; keyspace {keyspace!r} exists now: run "
        "the same command with --resume to finish it (imports are safe to send again)"
    )


def _create(client: Client, keyspace: str, config: dict[str, Any], resume: bool) -> None:
    try:
        found = client.get_keyspace(keyspace)
    except KeyspaceNotFound:
        client.create_keyspace(keyspace, **config)
        return
    have = {k: v for k, v in found.items() if k not in ("name", "switch")}
    if not resume:
        raise KvctlError(
            f"keyspace {keyspace!r} already exists: restore into a new keyspace (or, to "
            "finish a restore that stopped, --resume)",
            REFUSED,
        )
    if have != config:
        raise KvctlError(f"keyspace {keyspace!r} exists with another configuration: {have}")


def batches(records: list[Any]) -> list[list[Any]]:
    """Import requests: at most IMPORT_RECORDS records and about IMPORT_BYTES of JSON."""
    return chunks(records, IMPORT_RECORDS, IMPORT_BYTES, lambda r: len(json.dumps(r)))


def _send(
    client: Client,
    keyspace: str,
    batch: list[Any],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """One import, sent again while the cluster is unavailable or the outcome unknown (an
    import is create-only: sending it twice changes nothing), up to RETRY_FOR_S."""
    end = clock() + RETRY_FOR_S
    while True:
        try:
            client.import_records(keyspace, batch)
            return
        except (Retryable, UnknownOutcome):
            if clock() >= end:
                raise
            sleep(0.5)

"""Log compaction without stalling the driver (DESIGN.md §3: a 2.5 s dump in the tick
thread caused an election).

pysyncobj calls our serializer hook (`BackgroundSnapshot.write`) on the driver thread, then
atomically renames whatever the hook left at `<file>.tmp` to the snapshot file. The hook
captures a consistent view on the driver thread (`machine.snapshot()`: the state equals
the applied log at that instant), leaves at `.tmp` a hard link to the current snapshot
(the rename is then a no-op) or nothing when there is none (the rename fails, which
pysyncobj only notes; our `serializeChecker` decides the outcome), and returns at once; a
background thread then writes the real file (`<file>.bg`, fsynced). The driver thread
installs it in `check` (the serializeChecker hook): renamed over the snapshot file, the
directory fsynced. pysyncobj truncates the journal only after `check` reports SUCCESS —
once, then NOT_SERIALIZING so the next compaction can start — and sends no snapshot to
followers while one is being written. So the snapshot file is always absent or a whole
snapshot, and a crash in between falls back to the untruncated journal.

Invariant: the snapshot file's last included index never goes down through our renames.
Every rename onto it happens on the driver thread: pysyncobj's placeholder rename puts the
same file back; ours (`_install`) only replaces a file whose last index is lower — while
the background file was written, pysyncobj may have installed a newer snapshot received
from the leader (and cleared its journal up to it), and the older background file must
not replace it (issue 11 item 8). A snapshot received from the leader is renamed in by
pysyncobj without asking; if it is older than ours (seen once, DESIGN.md §3) the machine
refuses to move backwards (`Snapshots.restore`) and pysyncobj's journal restarts at that
snapshot's index, so the file and the journal still make a whole history.

It once left an "incomplete" marker when there was no snapshot yet. A node killed while
writing its first snapshot kept that marker as its snapshot file; as a leader it later sent
it to a member that needed a snapshot, which refused it (`read`), was sent it again, and
never caught up (seen in CI: joining meta voters stuck, thousands of "failed to load full
dump"). A marker found at start is deleted (`drop_marker`); `read` still refuses one.

File format: one JSON header line (the last and previous log entries and the cluster, as
pysyncobj hands them over), then the state machine's chunks. Never a pickle.

The cluster (every member's address, this one's included) is handed back as `TCPNode`s:
with dynamic membership pysyncobj replaces its peer set with it after loading a snapshot
and drops itself with `node != selfNode`, which is never False for a plain string — a
member restored from a snapshot would count itself as a peer it never hears from.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

from pysyncobj import SERIALIZER_STATE
from pysyncobj.node import TCPNode

from kv.files import sync_dir

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "raft.snapshot"  # in the group's data directory


class Snapshots(Protocol):
    def snapshot(self) -> Iterator[bytes]:
        """Called on the driver thread: capture a consistent view NOW (state == applied
        log); the returned chunks are then consumed on the snapshot thread."""
        ...

    def restore(self, chunks: Iterator[bytes]) -> None:
        """Replace the state with a snapshot's — unless it would move the state backwards."""
        ...


class BackgroundSnapshot:
    """pysyncobj's serializer, serializeChecker and deserializer hooks for one group."""

    def __init__(self, machine: Snapshots) -> None:
        self._machine = machine
        self._thread: threading.Thread | None = None
        self._result: int | None = None
        self._written: tuple[str, str, int] | None = None  # (.bg path, final path, last index)
        self.taken = 0  # snapshots written whole since start (docs/metrics.md)
        self.seconds = 0.0  # their total write time, capture to fsync

    def write(self, tmp_path: str, data: Any) -> None:
        """The serializer hook (driver thread): capture now, write in the background."""
        final = tmp_path[: -len(".tmp")]
        header = _header(data)
        chunks = self._machine.snapshot()
        _leave_placeholder(tmp_path, final)
        self._result, self._written = None, None
        self._thread = threading.Thread(
            target=self._stream, args=(final, header, chunks), name="raft-snapshot", daemon=True
        )
        self._thread.start()

    def _stream(self, final: str, header: bytes, chunks: Iterator[bytes]) -> None:
        partial, start = final + ".bg", time.monotonic()
        try:
            with open(partial, "wb") as f:
                f.write(header)
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            self._written = (partial, final, _last_index(header))
            self.taken, self.seconds = self.taken + 1, self.seconds + time.monotonic() - start
            self._result = SERIALIZER_STATE.SUCCESS
        except Exception:  # reported to pysyncobj, which keeps the journal and retries later
            log.exception("background snapshot to %s failed", final)
            self._result = SERIALIZER_STATE.FAILED

    def _install(self) -> int:
        """On the driver thread: the written file over the snapshot, unless the snapshot
        there is as new or newer (module docstring, the invariant)."""
        assert self._written is not None
        (partial, final, index), self._written = self._written, None
        try:
            there = read_last_index(final)
            if there is not None and there >= index:
                log.info(
                    "%s already holds index %d; dropping the snapshot of %d", final, there, index
                )
                os.remove(partial)
            else:
                os.replace(partial, final)
                sync_dir(os.path.dirname(final) or ".")  # before the journal is truncated
        except OSError:
            log.exception("installing the snapshot %s failed", partial)
            return int(SERIALIZER_STATE.FAILED)
        return int(SERIALIZER_STATE.SUCCESS)

    def join(self) -> None:
        """Wait for a snapshot being written (before deleting the files)."""
        if self._thread is not None:
            self._thread.join()

    def check(self) -> int:
        """The serializeChecker hook (driver thread)."""
        if self._thread is None:
            return int(SERIALIZER_STATE.NOT_SERIALIZING)
        if self._thread.is_alive():
            return int(SERIALIZER_STATE.SERIALIZING)
        result, self._thread = self._result, None
        if result == SERIALIZER_STATE.SUCCESS:
            return self._install()
        return int(SERIALIZER_STATE.FAILED)

    def read(self, path: str) -> tuple[Any, ...]:
        """The deserializer hook (driver thread): restore the machine, return the header.

        The file is made durable first: a snapshot received from the leader was written
        without fsync, and once it is loaded pysyncobj clears the journal (synced before
        the member's ack leaves, durable.py) — the snapshot is then all the member has."""
        with open(path, "rb") as f:
            os.fsync(f.fileno())
            sync_dir(os.path.dirname(path) or ".")
            header = json.loads(f.readline())
            if header.get("incomplete"):
                raise ValueError(f"{path} is an incomplete snapshot marker; the journal is intact")
            self._machine.restore(iter(lambda: f.read(1 << 20), b""))
        last, prev = _entry_from_json(header["last"]), _entry_from_json(header["prev"])
        return last, prev, [TCPNode(address) for address in header["cluster"]]


def _leave_placeholder(tmp_path: str, final: str) -> None:
    """What pysyncobj renames over the snapshot now: the current one (a hard link: the
    rename changes nothing), or nothing at all (module docstring)."""
    if os.path.exists(tmp_path):
        os.remove(tmp_path)
    if os.path.exists(final):
        os.link(final, tmp_path)


def drop_marker(path: str) -> bool:
    """Delete an "incomplete" marker left at the snapshot path by an older release killed
    mid-snapshot (module docstring); True if there was one. The journal was never
    truncated for it, so nothing is lost."""
    try:
        with open(path, "rb") as f:
            first = f.readline(4096)
    except FileNotFoundError:
        return False
    try:
        marker = json.loads(first).get("incomplete") is True
    except (ValueError, AttributeError):
        return False
    if marker:
        log.warning("deleting %s: an incomplete snapshot marker, not a snapshot", path)
        os.remove(path)
    return marker


def read_last_index(path: str) -> int | None:
    """The last included index of the snapshot file at `path`; None without a readable one."""
    try:
        with open(path, "rb") as f:
            return _last_index(f.readline())
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _last_index(header: bytes) -> int:
    return int(json.loads(header)["last"][1])


def _header(data: Any) -> bytes:
    last, prev, cluster = data
    header = {
        "last": _entry_to_json(last),
        "prev": _entry_to_json(prev),
        "cluster": sorted(node.id for node in cluster),
    }
    return json.dumps(header).encode() + b"\n"


def _entry_to_json(entry: Any) -> list[Any]:
    command, index, term = entry
    return [base64.b64encode(command).decode(), index, term]


def _entry_from_json(raw: list[Any]) -> tuple[bytes, int, int]:
    return base64.b64decode(raw[0]), int(raw[1]), int(raw[2])

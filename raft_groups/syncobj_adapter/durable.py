"""Group commit of one group's Raft state (docs/raft.md "Durability"): whatever pysyncobj
wrote in a driver cycle is made durable by one call, `GroupDurability.sync`, which the
driver makes before any message of that cycle leaves the node (`RaftDriver.cycle`).

- **Journal.** pysyncobj writes it through mmap and never syncs it (upstream #84);
  `mmap.flush()` (msync) would hold the GIL for its whole wait (CPython does not release
  it), stalling the node's asyncio thread. Every write of the journal is watched
  (`shim.watch_journal`); a journal written since the last sync gets one `os.fdatasync`
  on its file (`shim.journal_fd`), which releases the GIL.
- **Files.** A new group's data directory and journal file are fsynced into their parent
  directories once (`sync_new_dir`), so a synced journal cannot vanish with its
  directory entry.

Which groups have something to sync is kept by the driver (`RaftDriver.needs_sync`, called
from the watches), so a sync step visits only those.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from raft_groups.syncobj_adapter import shim


def sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_new_dir(data_dir: str) -> None:
    """Make a group's directory entries durable: its files in it, it in its parent."""
    path = os.path.abspath(data_dir)
    sync_dir(path)
    sync_dir(os.path.dirname(path))


class GroupDurability:
    """The journal of one group's SyncObj, synced by `sync` (driver thread).

    `changed()` is called (once until the next `sync`) when something needs syncing."""

    def __init__(self, obj: Any, data_dir: str, changed: Callable[[], None]) -> None:
        self._obj = obj
        self._changed = changed
        self.journal_written = True  # pysyncobj's first entry, written before the watch
        shim.watch_journal(obj, self._journal_written)
        sync_new_dir(data_dir)

    def _journal_written(self) -> None:
        if not self.journal_written:
            self.journal_written = True
            self._changed()

    def sync(self) -> bool:
        """Make the journal durable; True if it was written since the last sync."""
        journal = self.journal_written
        if journal:
            os.fdatasync(shim.journal_fd(self._obj))
            self.journal_written = False
        return journal

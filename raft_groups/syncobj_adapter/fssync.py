"""One syncfs(2) for the journals a driver cycle wrote, instead of one fdatasync each.

Measured on this project's VM (ext4): sixteen journals synced by sixteen fdatasyncs in
parallel threads take 4.4 ms a round (the filesystem commits them one after another);
sixteen writes and one syncfs take 0.35 ms (docs/benchmarks.md, issue 10). syncfs writes
back every dirty page and inode of the filesystem and, on ext4 and xfs, commits the
journal and flushes the device cache, as fdatasync does for one file — so after it
returns every journal on that filesystem is as durable as after its own fdatasync. It
also writes back whatever else is dirty there (LevelDB's unsynced writes, other
processes' files): its cost grows with that, which is why the driver uses it only when
two or more journals wait (`RaftDriver._sync_all`).

`sync_filesystem(fds)` syncs only when every fd is on one device (a journal on another
mount is synced by its own fdatasync) and the C library has syncfs; it returns whether it
did. ctypes releases the GIL for the call.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence

_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def sync_filesystem(fds: Sequence[int]) -> bool:
    """syncfs the one filesystem holding every fd in `fds`; False (nothing done) if they
    are not all on one device or syncfs is missing. OSError if the sync fails."""
    if _syncfs is None or not fds:
        return False
    if len({os.fstat(fd).st_dev for fd in fds}) != 1:
        return False
    if _syncfs(fds[0]) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"syncfs: {os.strerror(errno)}")
    return True

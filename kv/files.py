"""Files replaced durably: after a crash a file holds its old or its new content, and the
new one once the call returns (write a temporary file, fdatasync it, rename it over the
path, fsync the directory). Every sync releases the GIL. Used for Raft metadata
(raft_groups/syncobj_adapter/durable.py) and a node's identity (kv/startup.py)."""

from __future__ import annotations

import os


def write_durably(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` by `data` (a new file gets `mode`, less the umask)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_dir(os.path.dirname(path) or ".")


def sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

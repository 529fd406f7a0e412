"""`LevelDBEngine.sync` makes every write made before it durable (docs/storage.md): it
fsyncs each write-ahead log still on disk, not only the current one (LevelDB does not sync
a log it switches away from), and the directory when a log appeared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kv.leveldb import LevelDBEngine
from kv.storage import WriteBatch


def test_sync_fsyncs_every_log_and_the_directory_once_per_new_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = LevelDBEngine(tmp_path / "db")
    try:
        batch = WriteBatch()
        batch.put(b"k", b"v")
        engine.write(batch)
        (tmp_path / "db" / "999999.log").write_bytes(b"")  # as an older log left behind
        synced: list[str] = []
        fsync = os.fsync

        def recording(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            fsync(fd)

        monkeypatch.setattr(os, "fsync", recording)
        engine.sync()
        logs = sorted(str(p) for p in (tmp_path / "db").glob("*.log"))
        assert len(logs) == 2 and sorted(p for p in synced if p.endswith(".log")) == logs
        assert str(tmp_path / "db") in synced  # a log it had not seen: the directory too
        synced.clear()
        engine.sync()
        assert str(tmp_path / "db") not in synced and len(synced) == 2
    finally:
        engine.close()

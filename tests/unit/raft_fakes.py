"""A state machine that keeps nothing, for tests of the Raft adapter's mechanics."""

from __future__ import annotations

from typing import Any


class NullMachine:
    def apply(self, index: int, command: bytes) -> None:
        return None

    def snapshot(self) -> Any:
        return iter([b""])

    def restore(self, chunks: Any) -> None:
        return None

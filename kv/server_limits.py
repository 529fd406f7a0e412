"""What one HTTP listener allows a client (pure: settings and the connection count).

kv/http/limits.py applies these to aiohttp's connections (docs/security.md "Server
limits"). Invariant of `ConnectionGate`: `open` is the number of admitted connections not
yet released, never above `max_connections`, and no source holds more than
`max_per_source` of them (0: no per-source limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = 1024
    max_per_source: int = 256  # 0: no limit per client address
    header_timeout_s: float = 10.0  # a request's head, from its first byte (or the accept)
    body_timeout_s: float = 30.0  # a request's body, from the end of its head
    keepalive_timeout_s: float = 60.0  # an idle keep-alive connection, after a response


@dataclass
class ConnectionGate:
    """Counts the connections a listener holds, per source address."""

    max_connections: int
    max_per_source: int = 0
    open: int = 0
    refused: int = 0  # connections closed at once because a limit was reached
    timed_out: int = 0  # connections closed because a request's head did not arrive in time
    _by_source: dict[str, int] = field(default_factory=dict)

    def admit(self, source: str) -> bool:
        """Take a slot for a new connection from `source`, or refuse it (False)."""
        held = self._by_source.get(source, 0)
        if self.open >= self.max_connections or 0 < self.max_per_source <= held:
            self.refused += 1
            return False
        self.open += 1
        self._by_source[source] = held + 1
        return True

    def release(self, source: str) -> None:
        """Give back the slot `admit(source)` took (once per admitted connection)."""
        held = self._by_source.get(source, 0)
        if held <= 0:
            raise ValueError(f"release of {source!r}, which holds no connection")
        self.open -= 1
        if held == 1:
            del self._by_source[source]
        else:
            self._by_source[source] = held - 1

    def stats(self) -> dict[str, int]:
        return {"open": self.open, "refused": self.refused, "header_timeouts": self.timed_out}

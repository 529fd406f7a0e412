"""A long command's progress on stderr (`kvctl backup`, `restore`, `keyspace switch`): a
click progress bar on a terminal, else a line when the count moved, at most every
LINE_EVERY_S seconds and at the end; nothing with --json (stdout is then the reply)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

LINE_EVERY_S = 2.0


class Progress:
    def __init__(self, label: str, as_json: bool, every: float = LINE_EVERY_S) -> None:
        self.label = label
        self.every = every
        self.quiet = as_json
        self.tty = sys.stderr.isatty() and not as_json
        self.began = time.monotonic()
        self._last_line = float("-inf")
        self._bar: Any = None
        self._shown = -1

    def show(self, done: int, total: int, line: Callable[[float], str]) -> None:
        """`done` of `total` steps; `line(seconds since the start)` is the text without a
        terminal."""
        if done == self._shown:
            return
        if self.tty:
            if self._bar is None:
                self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self._bar.update(done - max(self._shown, 0))
        elif not self.quiet:
            now = time.monotonic()
            if done == total or now - self._last_line >= self.every:
                self._last_line = now
                click.echo(line(now - self.began), err=True)
        self._shown = done

    def restart(self, label: str) -> None:
        """A new phase (a switch turned back by a cancel): the count starts again."""
        self.close()
        self.label, self.began, self._shown = label, time.monotonic(), -1
        self._last_line = float("-inf")

    def close(self) -> float:
        """End the bar; the seconds since the start."""
        if self._bar is not None:
            self._bar.render_finish()
            self._bar = None
        return time.monotonic() - self.began

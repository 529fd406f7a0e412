"""Test-run wiring shared by every tier: how `ops/test` spreads files over two workers.

`ops/test` runs pytest on two workers (pytest-xdist, `--dist loadfile`): a file's tests run
on one worker, in order, sharing its module-scoped fixtures (one cluster, not one per
worker). The modules that need the network-namespace range 10.77.0.0/24 (one --netns
cluster at a time on a machine, docs/netns.md) form one unit, so they never run at the
same time, never wait for each other, and never skip because the range is busy.

(xdist's own `--dist loadgroup` would do this with markers, but with pytest 9 it did not
group anything: measured, tests of one marked module ran on both workers.)
"""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath
from typing import Any

import pytest

# every module that starts a --netns cluster (ops/cluster up --netns, directly, through the
# harness, or through ops/verify); tests/unit/test_test_wiring.py keeps this list complete
NETNS_MODULES = frozenset({"test_netns.py", "test_verify_runs.py", "test_randomized_eventual.py"})


def unit_of(nodeid: str) -> str:
    """The scheduling unit of a test: its file, or "netns" for the NETNS_MODULES."""
    path = nodeid.split("::", 1)[0]
    return "netns" if PurePosixPath(path).name in NETNS_MODULES else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with the NETNS_MODULES as one unit."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return ByFile(config, log)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """End every run with what was skipped, one line per reason; each reason says how to
    enable its tests (a system package, root, an environment variable)."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[str(reason).removeprefix("Skipped: ")] += 1
    terminalreporter.section("skipped, and how to enable")
    if not reasons:
        terminalreporter.write_line("nothing skipped")
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"{count:4d}  {reason}")

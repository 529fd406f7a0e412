"""Test-run wiring shared by every tier.

`ops/test` runs pytest on two workers (pytest-xdist, `--dist loadgroup`). Every test is put
in a group: the group a module names with `pytest.mark.xdist_group`, else its own file. A
file's tests therefore run on one worker, in order, sharing its module-scoped fixtures
(one cluster, not one per worker); the modules that need the network-namespace range
10.77.0.0/24 (only one --netns cluster at a time, docs/netns.md) share the group "netns",
so they never wait for each other or skip because the range is busy. Without xdist
(`-p no:xdist`, or pytest run directly) the marker is inert.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(str(item.path)))

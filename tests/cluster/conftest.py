from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster, sigterm_raises


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A 3-node loopback cluster, stopped after the test (also on failure and SIGTERM)."""
    c = Cluster(n=3)
    with sigterm_raises():
        try:
            yield c.up()
        finally:
            c.down()

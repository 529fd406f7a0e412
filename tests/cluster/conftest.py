from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster(n=3)
    try:
        yield c.up()
    finally:
        c.down()

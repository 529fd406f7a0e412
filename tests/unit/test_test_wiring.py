"""How ops/test spreads files over workers (tests/conftest.py): every module that can start
a --netns cluster is in NETNS_MODULES, so no two of them ever run at the same time."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import NETNS_MODULES, unit_of

TESTS = Path(__file__).resolve().parents[1]


def test_every_module_that_starts_a_netns_cluster_is_one_unit() -> None:
    starts = {
        p.name
        for p in TESTS.rglob("test_*.py")
        if p.name != Path(__file__).name
        and ("netns=True" in (text := p.read_text()) or "--netns" in text)
    }
    assert starts == NETNS_MODULES


def test_units_are_files_except_the_netns_modules() -> None:
    assert unit_of("tests/unit/test_phi.py::test_x[1]") == "tests/unit/test_phi.py"
    assert unit_of("tests/cluster/test_netns.py::test_y") == "netns"
    assert unit_of("tests/cluster/test_verify_runs.py::test_z") == "netns"

"""A node founds the cluster (`initial_cluster`) or joins a running one (`seeds`), never both
(issue 9, joining nodes; STYLE.md rule 6: every message names the field)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kv.config import MAX_SEEDS, ConfigError
from kv.config_load import load, parse_seeds

SECRET = "0123456789abcdef"
FOUNDERS = "n1=10.0.0.1:7001/10.0.0.1:7101,n2=10.0.0.2:7001/10.0.0.2:7101"


@pytest.fixture(autouse=True)
def _no_secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KV_CLUSTER_SECRET", raising=False)


def joiner(**changes: Any) -> dict[str, Any]:
    """The flags of a node n4 joining through two seeds, with changes applied."""
    base: dict[str, Any] = {
        "node_id": "n4",
        "data_dir": "/data/n4",
        "listen": "0.0.0.0:7004",
        "advertise": "10.0.0.4:7004",
        "raft_listen": "0.0.0.0:7104",
        "insecure": True,  # a non-loopback listen address without TLS (test_config.py)
        "raft_advertise": "10.0.0.4:7104",
        "cluster_secret": SECRET,
        "seeds": "10.0.0.1:7001,10.0.0.2:7001",
    }
    return {**base, **changes}


def fails_naming(field: str, overrides: dict[str, Any], path: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, overrides)
    message = str(info.value)
    assert message.startswith(f"{field}: "), message
    return message


def test_a_joiner_has_seeds_and_no_founders() -> None:
    cfg = load(None, joiner())
    assert cfg.seeds == ("10.0.0.1:7001", "10.0.0.2:7001")
    assert cfg.initial_cluster == () and not cfg.founder


def test_a_founder_votes_in_the_meta_group() -> None:
    cfg = load(
        None,
        joiner(
            node_id="n1",
            advertise="10.0.0.1:7001",
            raft_advertise="10.0.0.1:7101",
            seeds=None,
            initial_cluster=FOUNDERS,
        ),
    )
    assert cfg.founder and cfg.seeds == ()


def test_seeds_and_initial_cluster_are_exclusive() -> None:
    message = fails_naming("seeds", joiner(initial_cluster=FOUNDERS))
    assert "not both" in message


def test_a_node_without_either_names_both_choices() -> None:
    message = fails_naming("initial_cluster", joiner(seeds=None))
    assert "seeds" in message
    fails_naming("initial_cluster", joiner(seeds=""))


@pytest.mark.parametrize(
    ("seeds", "field"),
    [
        ("10.0.0.1", "seeds[0]"),
        ("10.0.0.1:7001,nohost", "seeds[1]"),
        ("10.0.0.1:99999", "seeds[0]"),
        ("0.0.0.0:7001", "seeds[0]"),  # a wildcard is nobody to dial
        ("10.0.0.4:7004", "seeds[0]"),  # this node itself
    ],
)
def test_each_seed_is_an_address_of_another_node(seeds: str, field: str) -> None:
    assert seeds.split(",")[-1] in fails_naming(field, joiner(seeds=seeds))


def test_duplicate_and_too_many_seeds_are_refused() -> None:
    assert "duplicate" in fails_naming("seeds", joiner(seeds="a:1,a:1"))
    many = ",".join(f"h{i}:7001" for i in range(MAX_SEEDS + 1))
    assert f"at most {MAX_SEEDS}" in fails_naming("seeds", joiner(seeds=many))


def test_parse_seeds_skips_blanks() -> None:
    assert parse_seeds(" a:1 ,, [::1]:2,") == ("a:1", "[::1]:2")
    assert parse_seeds("") == ()


def test_seeds_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        'node_id = "n4"\ndata_dir = "/d"\nlisten = "10.0.0.4:7004"\n'
        f'raft_listen = "10.0.0.4:7104"\ncluster_secret = "{SECRET}"\ninsecure = true\n'
        'seeds = ["10.0.0.1:7001", "10.0.0.2:7001"]\n'
    )
    assert load(str(path), {}).seeds == ("10.0.0.1:7001", "10.0.0.2:7001")
    path.write_text(path.read_text().replace('"10.0.0.2:7001"', "7001"))
    assert "7001" in fails_naming("seeds[1]", {}, str(path))
    path.write_text(path.read_text().replace('seeds = ["10.0.0.1:7001", 7001]', "seeds = 3"))
    fails_naming("seeds", {}, str(path))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"meta_poll_interval_s": 0}, "meta_poll_interval_s"),
        ({"meta_poll_interval_s": 2.0, "meta_poll_max_backoff_s": 1.0}, "meta_poll_max_backoff_s"),
    ],
)
def test_meta_poll_timing_is_checked(changes: dict[str, Any], field: str) -> None:
    fails_naming(field, joiner(**changes))

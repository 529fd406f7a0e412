"""Node configuration (DESIGN.md §2: bind and advertised addresses are separate, nothing assumes
127.0.0.1; §6 `--config node.toml` or flags; §8.5 / STYLE.md rule 6: frozen, validated with
`raise`, every message names the field, unknown keys are errors)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from kv.config import MAX_META_VOTERS, ConfigError, NodeConfig
from kv.config_load import load, parse_initial_cluster
from kv.meta import Member

SECRET = "0123456789abcdef"  # exactly 16 characters
ME = "n1=10.0.0.1:7001/10.0.0.1:7101"
PEERS = "n2=10.0.0.2:7001/10.0.0.2:7101,n3=10.0.0.3:7001/10.0.0.3:7101"

TOML = f"""
node_id = "n1"
data_dir = "/var/lib/kv/n1"
listen = "0.0.0.0:7001"
advertise = "10.0.0.1:7001"
raft_listen = "0.0.0.0:7101"
raft_advertise = "10.0.0.1:7101"
cluster_secret = "{SECRET}"
insecure = true
partitions = 32
vnodes = 16

[[initial_cluster]]
id = "n1"
http = "10.0.0.1:7001"
raft = "10.0.0.1:7101"

[[initial_cluster]]
id = "n2"
http = "10.0.0.2:7001"
raft = "10.0.0.2:7101"
"""


@pytest.fixture(autouse=True)
def _no_secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KV_CLUSTER_SECRET", raising=False)


def flags(**changes: Any) -> dict[str, Any]:
    """A valid flag set (what `python -m kv node ...` passes to load) with changes applied."""
    base: dict[str, Any] = {
        "node_id": "n1",
        "data_dir": "/data/n1",
        "listen": "0.0.0.0:7001",
        "advertise": "10.0.0.1:7001",
        "raft_listen": "0.0.0.0:7101",
        "raft_advertise": "10.0.0.1:7101",
        "cluster_secret": SECRET,
        "initial_cluster": f"{ME},{PEERS}",
        "insecure": True,  # listens on 0.0.0.0 without TLS: see the exposure tests below
    }
    return {**base, **changes}


def fails(overrides: dict[str, Any], path: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, overrides)
    return str(info.value)


def assert_fails_naming(field: str, overrides: dict[str, Any], path: str | None = None) -> str:
    message = fails(overrides, path)
    assert message.startswith((f"{field}: ", f"{field}[")), message
    return message


def write_toml(tmp_path: Path, text: str = TOML) -> str:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return str(path)


# -- loading ---------------------------------------------------------------------------


def test_load_from_toml(tmp_path: Path) -> None:
    cfg = load(write_toml(tmp_path), {})
    assert cfg.node_id == "n1"
    assert (cfg.listen, cfg.advertise) == ("0.0.0.0:7001", "10.0.0.1:7001")
    assert (cfg.raft_listen, cfg.raft_advertise) == ("0.0.0.0:7101", "10.0.0.1:7101")
    assert (cfg.partitions, cfg.vnodes) == (32, 16)
    assert cfg.initial_cluster == (
        Member("n1", "10.0.0.1:7001", "10.0.0.1:7101"),
        Member("n2", "10.0.0.2:7001", "10.0.0.2:7101"),
    )
    assert cfg.meta_dir == "/var/lib/kv/n1/meta" and cfg.db_dir == "/var/lib/kv/n1/db"


def test_flags_win_over_the_file_and_none_flags_are_ignored(tmp_path: Path) -> None:
    cfg = load(write_toml(tmp_path), {"data_dir": "/elsewhere", "vnodes": 8, "partitions": None})
    assert (cfg.data_dir, cfg.vnodes, cfg.partitions) == ("/elsewhere", 8, 32)


def test_flag_initial_cluster_replaces_the_files(tmp_path: Path) -> None:
    cfg = load(write_toml(tmp_path), {"initial_cluster": ME})
    assert [m.id for m in cfg.initial_cluster] == ["n1"]


def test_load_from_flags_only_with_defaults() -> None:
    cfg = load(None, flags())
    assert [m.id for m in cfg.initial_cluster] == ["n1", "n2", "n3"]
    assert (cfg.partitions, cfg.vnodes, cfg.log_level) == (64, 64, "INFO")
    assert cfg.request_timeout_s > 0 and cfg.internode_timeout_s > 0


def test_advertise_defaults_to_listen() -> None:
    overrides = flags(advertise=None, raft_advertise=None)
    overrides.update(listen="10.0.0.1:7001", raft_listen="10.0.0.1:7101")
    cfg = load(None, overrides)
    assert (cfg.advertise, cfg.raft_advertise) == ("10.0.0.1:7001", "10.0.0.1:7101")


def test_config_is_frozen() -> None:
    cfg = load(None, flags())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.node_id = "n2"  # type: ignore[misc]


# -- unknown and missing settings ----------------------------------------------------------


def test_unknown_setting_is_named(tmp_path: Path) -> None:
    message = assert_fails_naming("replicas", {}, write_toml(tmp_path, "replicas = 3\n" + TOML))
    assert "known:" in message and "node_id" in message
    assert_fails_naming("aaa", flags(aaa=1, zzz=2))


@pytest.mark.parametrize("field", ["node_id", "data_dir", "listen", "raft_listen"])
def test_required_settings_are_named(field: str) -> None:
    assert_fails_naming(field, flags(**{field: None, "advertise": None, "raft_advertise": None}))


def test_initial_cluster_is_required() -> None:
    assert_fails_naming("initial_cluster", flags(initial_cluster=None))
    assert_fails_naming("initial_cluster", flags(initial_cluster=""))


# -- node id and addresses (DESIGN.md §2: nothing assumes 127.0.0.1) ------------------------


@pytest.mark.parametrize("node_id", ["", "n 1", "n/1", "n1:", "ü", "x" * 65])
def test_node_id_pattern(node_id: str) -> None:
    assert_fails_naming("node_id", flags(node_id=node_id))


@pytest.mark.parametrize("node_id", ["n1", "node-1.dc_a", "x" * 64])
def test_valid_node_ids(node_id: str) -> None:
    cluster = f"{node_id}=10.0.0.1:7001/10.0.0.1:7101"
    assert load(None, flags(node_id=node_id, initial_cluster=cluster)).node_id == node_id


def test_node_id_with_trailing_newline_is_rejected() -> None:
    me = Member("n1\n", "10.0.0.1:7001", "10.0.0.1:7101")
    with pytest.raises(ConfigError, match="^node_id: "):
        NodeConfig("n1\n", "/d", "0.0.0.0:1", me.http, "0.0.0.0:2", me.raft, SECRET, (me,))


BAD_ADDRESSES = ["7001", "host", "host:", ":7001", "host:0", "host:65536", "host:7o01", "h:-1"]


@pytest.mark.parametrize("field", ["listen", "advertise", "raft_listen", "raft_advertise"])
@pytest.mark.parametrize("value", BAD_ADDRESSES)
def test_addresses_must_be_host_port(field: str, value: str) -> None:
    message = assert_fails_naming(field, flags(**{field: value}))
    assert repr(value) in message


@pytest.mark.parametrize("value", ["0.0.0.0:7001", "[::]:7001", ":::7001"])
@pytest.mark.parametrize("field", ["advertise", "raft_advertise"])
def test_wildcard_advertise_is_rejected(field: str, value: str) -> None:
    assert "wildcard" in assert_fails_naming(field, flags(**{field: value}))


def test_wildcard_listen_without_advertise_is_rejected_as_advertise() -> None:
    assert_fails_naming("advertise", flags(advertise=None))
    assert_fails_naming("raft_advertise", flags(raft_advertise=None))


def test_ipv6_and_hostname_addresses_are_accepted() -> None:
    cluster = "n1=[fd00::1]:7001/node1.example:7101"
    overrides = flags(listen="[::]:7001", advertise="[fd00::1]:7001", initial_cluster=cluster)
    cfg = load(None, {**overrides, "raft_advertise": "node1.example:7101"})
    assert cfg.advertise == "[fd00::1]:7001"


@pytest.mark.parametrize(
    ("peer", "field"),
    [
        ("n2=0.0.0.0:7001/10.0.0.2:7101", "initial_cluster.n2.http"),
        ("n2=10.0.0.2:7001/10.0.0.2", "initial_cluster.n2.raft"),
    ],
)
def test_member_addresses_are_checked(peer: str, field: str) -> None:
    assert_fails_naming(field, flags(initial_cluster=f"{ME},{peer}"))


# -- secret ----------------------------------------------------------------------------


def test_secret_shorter_than_16_is_rejected() -> None:
    assert_fails_naming("cluster_secret", flags(cluster_secret=SECRET[:-1]))


def test_secret_from_file_is_stripped(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"  {SECRET}\n")
    secret_file.chmod(0o600)
    cfg = load(None, flags(cluster_secret=None, cluster_secret_file=str(secret_file)))
    assert cfg.cluster_secret == SECRET


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_secret_file_others_can_read_is_refused_naming_it(tmp_path: Path, mode: int) -> None:
    """Issue 11 item 8: the secret derives every key of the cluster."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(mode)
    load_flags = flags(cluster_secret=None, cluster_secret_file=str(secret_file))
    message = assert_fails_naming("cluster_secret_file", load_flags)
    assert str(secret_file) in message and "chmod 600" in message


def test_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KV_CLUSTER_SECRET", SECRET + "-env")
    assert load(None, flags(cluster_secret=None)).cluster_secret == SECRET + "-env"


def test_secret_precedence_explicit_then_file_then_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KV_CLUSTER_SECRET", "e" * 16)
    secret_file = tmp_path / "secret"
    secret_file.write_text("f" * 16)
    secret_file.chmod(0o600)
    both = flags(cluster_secret_file=str(secret_file))
    assert load(None, both).cluster_secret == SECRET
    assert load(None, {**both, "cluster_secret": None}).cluster_secret == "f" * 16


def test_missing_secret_is_named() -> None:
    message = assert_fails_naming("cluster_secret", flags(cluster_secret=None))
    assert "KV_CLUSTER_SECRET" in message


def test_short_secret_from_env_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KV_CLUSTER_SECRET", "short")
    assert_fails_naming("cluster_secret", flags(cluster_secret=None))


# -- initial cluster (DESIGN.md §2: up to 5 meta voters; Raft ids must match exactly) ---------


def test_initial_cluster_must_list_this_node() -> None:
    message = assert_fails_naming("initial_cluster", flags(initial_cluster=PEERS))
    assert "'n1'" in message


def test_initial_cluster_rejects_duplicate_ids() -> None:
    dup = "n1=10.0.0.9:7001/10.0.0.9:7101"
    assert "duplicate" in assert_fails_naming(
        "initial_cluster", flags(initial_cluster=f"{ME},{dup}")
    )


def test_initial_cluster_allows_at_most_five_founders() -> None:
    peers = [f"n{i}=10.0.0.{i}:7001/10.0.0.{i}:7101" for i in range(2, MAX_META_VOTERS + 2)]
    assert MAX_META_VOTERS == 5
    ok = ",".join([ME, *peers[: MAX_META_VOTERS - 1]])
    assert len(load(None, flags(initial_cluster=ok)).initial_cluster) == MAX_META_VOTERS
    too_many = ",".join([ME, *peers])
    assert "at most 5" in assert_fails_naming("initial_cluster", flags(initial_cluster=too_many))


@pytest.mark.parametrize(
    "me",
    ["n1=10.0.0.9:7001/10.0.0.1:7101", "n1=10.0.0.1:7001/10.0.0.1:7109"],
)
def test_initial_cluster_must_match_this_nodes_advertised_addresses(me: str) -> None:
    message = assert_fails_naming("initial_cluster", flags(initial_cluster=f"{me},{PEERS}"))
    assert "10.0.0.1:7001" in message and "10.0.0.1:7101" in message


def test_parse_initial_cluster() -> None:
    assert parse_initial_cluster(" n1=a:1/a:2 , n2=[::1]:3/b:4,") == (
        Member("n1", "a:1", "a:2"),
        Member("n2", "[::1]:3", "b:4"),
    )
    assert parse_initial_cluster("") == ()


@pytest.mark.parametrize("spec", ["n1", "n1=a:1", "n1:a:1/a:2", "n1=a:1,n2"])
def test_parse_initial_cluster_errors_name_the_field(spec: str) -> None:
    with pytest.raises(ConfigError, match="^initial_cluster: .*ID=HOST:PORT/HOST:RAFT_PORT"):
        parse_initial_cluster(spec)


@pytest.mark.parametrize("peer_id", ["", "bad id!"])
def test_initial_cluster_member_ids_are_validated(peer_id: str) -> None:
    fails(flags(initial_cluster=f"{ME},{peer_id}=10.0.0.2:7001/10.0.0.2:7101"))


# -- ring shape ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -2, 3, 96, 2**17])
def test_partitions_must_be_a_power_of_two(value: int) -> None:
    assert str(value) in assert_fails_naming("partitions", flags(partitions=value))


@pytest.mark.parametrize("value", [1, 2, 1024, 65536])
def test_valid_partitions(value: int) -> None:
    assert load(None, flags(partitions=value)).partitions == value


@pytest.mark.parametrize(("value", "ok"), [(0, False), (1, True), (4096, True), (4097, False)])
def test_vnodes_range(value: int, ok: bool) -> None:
    if ok:
        assert load(None, flags(vnodes=value)).vnodes == value
    else:
        assert_fails_naming("vnodes", flags(vnodes=value))


@pytest.mark.parametrize(
    "field", ["request_timeout_s", "internode_timeout_s", "anti_entropy_busy_interval_s"]
)
@pytest.mark.parametrize("value", [0, -1.0])
def test_timeouts_must_be_positive(field: str, value: float) -> None:
    assert "positive" in assert_fails_naming(field, flags(**{field: value}))


def test_the_anti_entropy_write_threshold_must_not_be_negative() -> None:
    field = "anti_entropy_busy_writes_per_s"
    assert "negative" in assert_fails_naming(field, flags(**{field: -1.0}))
    assert load(None, flags(**{field: 0.0})).anti_entropy_busy_writes_per_s == 0.0


@pytest.mark.parametrize(
    ("field", "toml_line"),
    [
        ("listen", "listen = 7001"),
        ("partitions", 'partitions = "64"'),
        ("node_id", "node_id = 1"),
    ],
)
def test_wrongly_typed_toml_values_name_the_field(
    tmp_path: Path, field: str, toml_line: str
) -> None:
    kept = [line for line in TOML.splitlines() if not line.startswith(f"{field} =")]
    text = "\n".join([toml_line, *kept])
    assert_fails_naming(field, {}, write_toml(tmp_path, text))


def test_initial_cluster_table_missing_raft_names_the_field(tmp_path: Path) -> None:
    text = TOML.replace('raft = "10.0.0.2:7101"\n', "")
    assert_fails_naming("initial_cluster", {}, write_toml(tmp_path, text))


def test_unknown_key_in_initial_cluster_table_is_an_error(tmp_path: Path) -> None:
    # Appended after the last [[initial_cluster]] header, so TOML puts it in that table.
    fails({}, write_toml(tmp_path, TOML + 'zone = "eu-1"\n'))


@pytest.mark.parametrize(
    ("field", "value"),
    [("transfer_batch", 0), ("transfer_keys_per_s", -1.0), ("raft_moves_at_once", 0)],
)
def test_transfer_throttle_is_checked(field: str, value: float) -> None:
    assert_fails_naming(field, flags(**{field: value}))


def test_transfer_throttle_defaults_to_none() -> None:
    cfg = load(None, flags())
    assert (cfg.transfer_batch, cfg.transfer_keys_per_s) == (256, 0.0)
    assert load(None, flags(transfer_keys_per_s=25)).transfer_keys_per_s == 25
    assert (cfg.raft_moves_at_once, load(None, flags(raft_moves_at_once=2)).raft_moves_at_once) == (
        8,
        2,
    )


# -- addresses that collide (issue 11 item 9) --------------------------------------------


@pytest.mark.parametrize(
    ("listen", "raft_listen"),
    [
        ("0.0.0.0:7001", "0.0.0.0:7001"),
        ("127.0.0.1:7001", "0.0.0.0:7001"),  # the wildcard takes the port on every host
        ("10.0.0.1:7001", "10.0.0.1:7001"),
    ],
)
def test_listen_and_raft_listen_on_one_port_are_refused(listen: str, raft_listen: str) -> None:
    assert_fails_naming("raft_listen", flags(listen=listen, raft_listen=raft_listen))


def test_the_same_port_on_two_hosts_is_allowed() -> None:
    cfg = load(None, flags(listen="10.0.0.1:7001", raft_listen="127.0.0.1:7001"))
    assert cfg.raft_listen == "127.0.0.1:7001"


def test_one_advertised_address_for_http_and_raft_is_refused() -> None:
    me = "n1=10.0.0.1:7001/10.0.0.1:7001"
    bad = flags(raft_advertise="10.0.0.1:7001", initial_cluster=f"{me},{PEERS}")
    assert_fails_naming("raft_advertise", bad)


@pytest.mark.parametrize(
    "peers",
    [
        "n2=10.0.0.1:7001/10.0.0.2:7101",  # n2's http is n1's http
        "n2=10.0.0.2:7001/10.0.0.1:7101",  # n2's raft is n1's raft
        "n2=10.0.0.2:7001/10.0.0.2:7101,n3=10.0.0.2:7001/10.0.0.3:7101",
    ],
)
def test_a_member_address_given_twice_is_refused(peers: str) -> None:
    message = assert_fails_naming("initial_cluster", flags(initial_cluster=f"{ME},{peers}"))
    assert "is given to both" in message


# ---------------------------------------------------------------------- exposure (issue 11)
TLS = {"tls_cert": "/etc/kv/n1.pem", "tls_key": "/etc/kv/n1.key", "tls_ca": "/etc/kv/ca.pem"}


@pytest.mark.parametrize("field", ["listen", "raft_listen"])
def test_a_non_loopback_listen_address_needs_tls_and_auth(field: str) -> None:
    loopback = {"listen": "127.0.0.1:7001", "raft_listen": "127.0.0.1:7101"}
    exposed = {**loopback, field: "0.0.0.0:7001" if field == "listen" else "10.0.0.1:7101"}
    with pytest.raises(ConfigError, match=f"^{field}: .* can be reached from other hosts"):
        load(None, flags(insecure=False, **exposed))
    with pytest.raises(ConfigError, match=f"^{field}: "):
        load(None, flags(insecure=False, **exposed, **TLS))  # TLS without auth
    with pytest.raises(ConfigError, match=f"^{field}: "):
        load(None, flags(insecure=False, auth=True, **exposed))  # auth without TLS
    assert load(None, flags(insecure=False, auth=True, **exposed, **TLS)).tls is not None
    assert load(None, flags(insecure=True, **exposed)).insecure
    assert load(None, flags(insecure=False, **loopback)).tls is None


@pytest.mark.parametrize(
    "address", ["127.0.0.1:7001", "127.3.4.5:7001", "[::1]:7001", "localhost:7001"]
)
def test_loopback_addresses_need_nothing(address: str) -> None:
    load(None, flags(insecure=False, listen=address, raft_listen="127.0.0.1:7101"))


@pytest.mark.parametrize("missing", ["tls_cert", "tls_key", "tls_ca"])
def test_tls_files_come_together(missing: str) -> None:
    given = {k: v for k, v in TLS.items() if k != missing}
    with pytest.raises(ConfigError, match=f"^{missing}: .* together"):
        load(None, flags(**given))


# -- HTTP server limits (kv/http/limits.py) ----------------------------------------------


def test_server_limits_have_defaults_and_come_from_the_settings() -> None:
    default = load(None, flags()).server_limits
    assert default.max_connections >= 1 and 0 < default.header_timeout_s
    tuned = load(None, flags(max_connections=8, header_timeout_s=1.5)).server_limits
    assert (tuned.max_connections, tuned.header_timeout_s) == (8, 1.5)
    assert tuned.keepalive_timeout_s == default.keepalive_timeout_s


@pytest.mark.parametrize(
    "field, value",
    [
        ("header_timeout_s", 0),
        ("body_timeout_s", -1.0),
        ("keepalive_timeout_s", 0.0),
        ("max_connections", 0),
        ("max_connections_per_source", -1),
    ],
)
def test_bad_server_limits_are_named(field: str, value: float) -> None:
    named = "max_connections" if field.startswith("max_") else field
    assert_fails_naming(named, flags(**{field: value}))

"""`kvctl status` joins a plan's pending moves with every member's own progress
(kvctl/status.py `progress`, pure). The fixtures have the shapes the API returns:
`GET /v1/membership` (kv/service.py) and `GET /v1/cluster` `transfers`
(dynamo_mode/transfer.py `Progress`), `raft_moves` (raft_groups/mover.py
`GroupProgress`) and `sizes` (kv/sizer.py), taken from a 3 → 4 node plan on a real
cluster."""

from __future__ import annotations

import json
from typing import Any

from kvctl import render
from kvctl.status import Sample, progress

RAFT = {"n1": "10.0.0.1:7101", "n2": "10.0.0.2:7101", "n3": "10.0.0.3:7101", "n4": "10.0.0.4:7101"}
ADD_N4 = {
    "kind": "add",
    "node": "n4",
    "member": {"id": "n4", "http": "10.0.0.4:7001", "raft": RAFT["n4"]},
}


def membership(*pending: dict[str, Any], done: int = 0) -> dict[str, Any]:
    return {
        "status": "moving",
        "epoch": 11,
        "plan_id": "fa9f23e58a5c4552",
        "changes": [ADD_N4],
        "moves_pending": len(pending),
        "moves_done": done,
        "pending": list(pending),
    }


def pending(mode: str, partition: int, frm: str, to: str, ready: str = "") -> dict[str, Any]:
    return {
        "mode": mode,
        "replication": 3,
        "partition": partition,
        "from": frm.split(),
        "to": to.split(),
        "ready": ready.split(),
    }


def transfer(
    partition: int, state: str, copied: int = 0, error: str = "", size: int = 0
) -> dict[str, Any]:
    return {
        "mode": "eventual",
        "replication": 3,
        "partition": partition,
        "source": "n3",
        "keys_copied": copied,
        "bytes_copied": size,
        "keys_repaired": 0,
        "state": state,
        "error": error,
    }


def size(mode: str, partition: int, nbytes: int) -> dict[str, Any]:
    return {"mode": mode, "replication": 3, "partition": partition, "keys": 1, "bytes": nbytes}


def group(partition: int, step: str, state: str, detail: str = "") -> dict[str, Any]:
    return {
        "partition": partition,
        "replication": 3,
        "step": step,
        "state": state,
        "detail": detail,
        "changes": 1,
        "members": [RAFT["n1"], RAFT["n2"], RAFT["n3"]],
        "target": [RAFT["n4"], RAFT["n1"], RAFT["n2"]],
    }


def view(
    node: str,
    transfers: list[dict[str, Any]] | None = None,
    groups: dict[str, dict[str, Any]] | None = None,
    leads: tuple[str, ...] = (),
    sizes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    members = [
        {"id": n, "http": f"h{n}:7001", "raft": r, "status": "alive"} for n, r in RAFT.items()
    ]
    return {
        "node": node,
        "member": True,
        "epoch": 11,
        "members": members,
        "transfers": transfers or [],
        "raft_moves": {"running": len(groups or {}), "totals": {}, "groups": groups or {}},
        "raft_groups": {gid: {"leader": RAFT[node], "term": 2, "commit_index": 9} for gid in leads},
        "sizes": sizes or [],
    }


def views(**given: Any) -> dict[str, Any]:
    return {n: given.get(n, view(n)) for n in RAFT}


EV5 = pending("eventual", 5, "n1 n2 n3", "n4 n1 n2")
LIN7 = pending("linearizable", 7, "n1 n2 n3", "n4 n1 n2")


# ---------------------------------------------------------------------- idle
def test_idle_has_no_moves_and_names_the_members() -> None:
    idle = {"status": "idle", "epoch": 12, "members": ["n1", "n2", "n3", "n4"]}
    st = progress(idle, {}, now=5.0)
    assert st.idle and st.moves == () and st.stuck == ()
    assert render.summary(st) == "no plan in flight (epoch 12); members n1, n2, n3, n4"
    assert st.to_wire()["status"] == "idle" and st.to_wire()["moves"] == []


# ---------------------------------------------------------------------- eventual moves
def test_an_eventual_move_shows_the_incoming_owners_pull() -> None:
    st = progress(membership(EV5), views(n4=view("n4", [transfer(5, "copying", 120)])), 1.0)
    (move,) = st.moves
    assert (move.outgoing, move.incoming) == (("n3",), ("n4",))
    assert (move.state, move.keys, move.detail, move.stuck) == ("copying", 120, "n4 ← n3", None)
    assert st.keys == 120 and st.stuck == ()


def test_a_move_no_pull_has_started_for_is_waiting_not_stuck() -> None:
    (move,) = progress(membership(EV5), views(), 1.0).moves
    assert (move.state, move.keys, move.stuck) == ("waiting", 0, None)


def test_a_failed_pull_is_stuck_with_its_error() -> None:
    failed = transfer(5, "failed", 40, "PeerTimeout: part_scan to n3 timed out")
    st = progress(membership(EV5), views(n4=view("n4", [failed])), 1.0)
    (move,) = st.stuck
    assert move.state == "failed" and move.keys == 40
    assert move.stuck == "n4: pull from n3 failed: PeerTimeout: part_scan to n3 timed out"
    assert "stuck: eventual n=3 partition 5 (n3 → n4): n4: pull from n3" in render.first_stuck(st)


def test_an_incoming_owner_that_does_not_answer_is_stuck() -> None:
    st = progress(membership(EV5), views(n4="cannot connect to http://hn4:7001"), 1.0)
    (move,) = st.stuck
    assert move.state == "unknown"
    assert move.stuck == "n4: does not answer"
    assert st.unreachable == {"n4": "cannot connect to http://hn4:7001"}
    assert render.first_stuck(st) == (
        "stuck: eventual n=3 partition 5 (n3 → n4): n4: does not answer; "
        "not answering: n4: cannot connect to http://hn4:7001"
    )


def test_a_move_shows_its_least_advanced_incoming_owner() -> None:
    two = pending("eventual", 9, "n1 n2 n3", "n4 n5 n1", ready="n5")
    found = views(n4=view("n4", [transfer(9, "verifying", 30)]))
    (move,) = progress(membership(two), found, 1.0).moves
    assert move.incoming == ("n4", "n5") and move.ready == ("n5",)
    assert (move.state, move.keys) == ("verifying", 30)
    (move,) = progress(membership(two), views(), 1.0).moves
    assert move.state == "waiting"


def test_a_pull_another_plan_left_behind_does_not_count_for_this_move() -> None:
    other = {**transfer(5, "reported", 99), "replication": 2}
    (move,) = progress(membership(EV5), views(n4=view("n4", [other])), 1.0).moves
    assert (move.state, move.keys) == ("waiting", 0)


# ---------------------------------------------------------------------- linearizable moves
def test_a_raft_move_shows_its_leaders_step_with_node_ids() -> None:
    stale = group(7, f"remove {RAFT['n3']}", "blocked", "no_quorum: 2 of 4 live")
    now = group(7, f"add {RAFT['n4']}", "moving")
    found = views(
        n3=view("n3", groups={"p7r3": stale}), n1=view("n1", groups={"p7r3": now}, leads=("p7r3",))
    )
    st = progress(membership(LIN7), found, 1.0)
    (move,) = st.moves
    assert (move.state, move.detail, move.stuck, move.keys) == ("moving", "n1: add n4", None, None)


def test_a_blocked_raft_move_is_stuck_with_why() -> None:
    why = f"{RAFT['n4']} did not catch up within 60.0s"
    blocked = group(7, f"remove {RAFT['n3']}", "blocked", why)
    found = views(n2=view("n2", groups={"p7r3": blocked}, leads=("p7r3",)))
    (move,) = progress(membership(LIN7), found, 1.0).stuck
    assert move.stuck == "n2: remove n3 blocked: n4 did not catch up within 60.0s"


def test_without_the_leaders_view_an_active_report_is_taken() -> None:
    done = group(7, "report", "reported", "move_done n4: ready")
    failing = group(7, f"add {RAFT['n4']}", "failed", "NotReady: group not running")
    found = views(n1=view("n1", groups={"p7r3": done}), n2=view("n2", groups={"p7r3": failing}))
    (move,) = progress(membership(LIN7), found, 1.0).moves
    assert move.state == "failed" and move.stuck == "n2: add n4 failed: NotReady: group not running"


def test_a_raft_move_nobody_drives_yet_is_waiting() -> None:
    (move,) = progress(membership(LIN7), views(), 1.0).moves
    assert (move.state, move.detail, move.stuck) == (
        "waiting",
        "no leader has started it yet",
        None,
    )


# ---------------------------------------------------------------------- bytes
def test_an_eventual_move_shows_bytes_copied_of_the_bytes_expected() -> None:
    """Expected: the partition's size on the first current owner that reports it (n2 here;
    n1 has not counted it yet), once per incoming owner."""
    found = views(
        n4=view("n4", [transfer(5, "copying", 120, size=1536)]),
        n2=view("n2", sizes=[size("eventual", 5, 4096), size("linearizable", 7, 999)]),
        n3=view("n3", sizes=[size("eventual", 5, 1)]),
    )
    st = progress(membership(EV5, LIN7), found, 1.0)
    ev, lin = st.moves
    assert (ev.bytes, ev.bytes_expected) == (1536, 4096)
    assert (lin.bytes, lin.bytes_expected) == (None, 999)
    assert (st.bytes, st.bytes_expected, st.bytes_unknown) == (1536, 4096 + 999, 0)
    wire = st.to_wire()
    assert (wire["bytes"], wire["moves"][0]["bytes_expected"]) == (1536, 4096)
    text = "\n".join(render.status(st))
    assert "1.5 KiB/4.0 KiB" in text and "-/999 B" in text
    assert "1.5 KiB copied (5.0 KiB pending)" in render.summary(st)


def test_a_move_no_owner_sized_is_unknown_not_zero() -> None:
    st = progress(membership(EV5), views(n4=view("n4", [transfer(5, "copying", 3, size=90)])), 1.0)
    (move,) = st.moves
    assert move.bytes_expected is None and (st.bytes_expected, st.bytes_unknown) == (0, 1)
    assert "90 B/?" in "\n".join(render.status(st))
    assert "90 B copied (0 B pending, 1 moves unsized)" in render.summary(st)


def test_a_reported_pull_keeps_its_counts() -> None:
    done = transfer(5, "reported", 10, size=700)
    (move,) = progress(
        membership({**EV5, "ready": ["n4"]}), views(n4=view("n4", [done])), 1.0
    ).moves
    assert (move.state, move.keys, move.bytes) == ("reported", 10, 700)


def test_a_raft_move_shows_how_far_the_member_catching_up_trails() -> None:
    catching = {**group(7, "report", "moving"), "catching_up": RAFT["n4"], "behind": 1200}
    found = views(n1=view("n1", groups={"p7r3": catching}, leads=("p7r3",)))
    (move,) = progress(membership(LIN7), found, 1.0).moves
    assert move.detail == "n1: report; n4 1200 entries behind"


def test_the_plan_text_shows_sizes_and_what_is_unsized() -> None:
    moves = [
        {"mode": "eventual", "replication": 3, "partition": 1, "from": "n1", "to": "n4"},
        {"mode": "eventual", "replication": 3, "partition": 2, "from": "n2", "to": "n4"},
    ]
    shown = {
        "plan_id": "p",
        "epoch": 3,
        "changes": [ADD_N4],
        "moves": [
            {**moves[0], "bytes": 2048, "keys": 20},
            {**moves[1], "bytes": None, "keys": None},
        ],
        "summary": {
            "replicas_moving": 2,
            "by_mode": {"eventual": 2},
            "bytes": 2048,
            "keys": 20,
            "bytes_unknown": 1,
        },
    }
    text = "\n".join(render.plan(shown))
    assert "n1 → n4    2.0 KiB  20" in text and "n2 → n4    ?        ?" in text
    assert "2 replicas move (eventual 2); 2.0 KiB in 20 keys expected (at least: 1 moves" in text


# ---------------------------------------------------------------------- rates
def test_rates_and_eta_come_from_an_earlier_sample_of_the_same_plan() -> None:
    earlier = progress(
        membership(EV5, LIN7, done=2), views(n4=view("n4", [transfer(5, "copying", 100)])), 10.0
    )
    later_views = views(n4=view("n4", [transfer(5, "copying", 160)]))
    st = progress(membership(EV5, done=4), later_views, 14.0, since=earlier.sample())
    assert st.moves_per_s == 0.5 and st.keys_per_s == 15.0
    assert st.eta_s == 2.0  # 1 pending at 0.5 moves/s
    assert st.moves[0].keys_per_s == 15.0
    assert "0.50 moves/s, 15 keys/s, ETA 2s" in render.summary(st)


def test_no_rates_against_another_plan_or_without_progress() -> None:
    other = Sample(at=1.0, plan_id="another", moves_done=0, keys=0)
    st = progress(membership(EV5), views(), 5.0, since=other)
    assert (st.moves_per_s, st.keys_per_s, st.eta_s) == (None, None, None)
    same = Sample(at=1.0, plan_id="fa9f23e58a5c4552", moves_done=0, keys=0)
    st = progress(membership(EV5), views(), 5.0, since=same)
    assert st.moves_per_s == 0.0 and st.eta_s is None


# ---------------------------------------------------------------------- output
def test_the_wire_form_is_json_and_lists_what_is_stuck() -> None:
    failed = transfer(5, "failed", 0, "PeerUnreachable: n3")
    st = progress(membership(EV5, LIN7), views(n4=view("n4", [failed])), 1.0)
    wire = json.loads(json.dumps(st.to_wire()))
    assert wire["moves_pending"] == 2 and wire["plan_id"] == "fa9f23e58a5c4552"
    assert wire["moves"][0]["from"] == ["n1", "n2", "n3"] and wire["moves"][0]["state"] == "failed"
    assert wire["stuck"] == [
        {"mode": "eventual", "replication": 3, "partition": 5, "reason": st.moves[0].stuck}
    ]


def test_the_text_lists_every_move_from_to() -> None:
    st = progress(membership(EV5, LIN7), views(n4=view("n4", [transfer(5, "copying", 7)])), 1.0)
    text = "\n".join(render.status(st))
    assert text.splitlines()[0] == "plan fa9f23e58a5c4552 moving: 0/2 moves done"
    assert "add n4 (http 10.0.0.4:7001, raft 10.0.0.4:7101)" in text
    assert "eventual      3  5          n3 → n4    copying n4 ← n3" in text


def test_a_membership_without_owners_still_shows_the_moves() -> None:
    """A node older than `from`/`to` in GET /v1/membership: the moves, without owners."""
    old = {"mode": "eventual", "replication": 3, "partition": 5}
    (move,) = progress(membership(old), views(), 1.0).moves
    assert move.state == "waiting" and move.source == move.target == ()

"""A member restarted from its journal speaks for the configuration its log names
(raft_groups/syncobj_adapter/shim.py `adopt_logged_configuration`, Raft thesis §4.1).

pysyncobj re-applies a loaded journal's membership entries only as they are applied, so a
restarted member kept the peers it was constructed with: in the cluster tier a member
SIGKILLed mid-move came back without the group's new member — by then its leader — among
its peers, dropped every append from it and campaigned for ever. Real pysyncobj groups on
loopback, real journals and snapshots (the harness of test_raft_membership.py).
"""

from __future__ import annotations

import asyncio

from raft_groups.syncobj_adapter import Done
from tests.integration.test_raft_membership import (
    DEADLINE_S,
    Member,
    _apoll,
    _fill,
    _leader,
    _poll,
    _put,
    _same_state,
    cluster,
)

__all__ = ["cluster"]  # the fixture, used by name


def test_a_restarted_member_takes_the_members_its_log_added_before_any_tick(
    cluster: list[Member],
) -> None:
    """b stops after appending "add d" and "remove <old leader>" (past a snapshot: its
    log no longer starts at 1) and is started again with the founding peers, as a node
    whose metadata still names the old owners would: before its first tick its peers are
    the log's (d in, the removed member out), and then it follows the group and applies
    what is written next."""
    a, b, c, d = cluster
    originals = cluster[:3]
    founders = tuple(m.address for m in originals)

    async def grow_and_shrink() -> Member:
        leader = _leader(originals)
        assert leader.group is not None
        await _fill(leader, 120)  # compaction=50: b restarts from a snapshot plus a log
        d.start(peers=founders, joining=True)
        assert isinstance(await leader.group.add_member(d.address), Done)
        assert await leader.group.wait_caught_up(d.address, DEADLINE_S)
        moved = await leader.group.transfer_leadership()
        new = next(m for m in cluster if m.address == getattr(moved, "leader", None))
        assert new.group is not None and new is not leader, moved
        assert isinstance(await new.group.remove_member(leader.address), Done)
        return leader

    old = asyncio.run(grow_and_shrink())
    follower = next(m for m in (b, c) if m is not old)
    want = tuple(sorted(m.address for m in cluster if m is not old))
    _poll(lambda: follower.group is not None and follower.group.members() == want, "the removal")
    old.close_group(delete_data=True)
    follower.stop()

    follower.start(peers=founders, run=False)  # constructed, not ticked
    assert follower.group is not None
    assert follower.group.members() == want
    assert follower.group.adopted_changes >= 1
    assert follower.driver is not None
    follower.driver.start()

    final = [m for m in cluster if m is not old]

    async def write_after() -> None:
        leader = _leader(final)
        assert leader.group is not None
        loop = asyncio.get_running_loop()
        for i in range(5):
            got = await asyncio.wait_for(leader.group.propose(_put(f"after{i}", i), loop), 10)
            assert got["ok"], got
        await _apoll(lambda: _same_state(final), "the restarted member to apply them")

    asyncio.run(write_after())
    assert follower.read("after4") == (4, 1)

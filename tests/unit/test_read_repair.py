"""A GET's read repair (Dynamo §4.5) through the coordinator over the in-project transport
twin (tests/unit/test_handoff.py `Net`): a replica that answered with less is sent the
reconciled result; when every asked replica answered the same, no background task is left
behind (one used to be started on every GET, to find nothing to do).
"""

from __future__ import annotations

import asyncio

from tests.unit.test_handoff import REF, V1, V2, WHERE, Net, coordinator


def test_replicas_that_agree_leave_no_repair_task() -> None:
    async def scenario() -> None:
        net = Net()
        for node in ("a", "b", "c"):
            net.replicas[node].store(REF, (V2,))
        c = coordinator(net)
        read = await c.get(WHERE, 3, 1.0)
        assert read.versions == (V2,) and not c._background
        await c.close()
        assert {op for _, op in net.calls} == {"fetch"}  # nothing was stored back

    asyncio.run(scenario())


def test_a_stale_replica_is_repaired_with_the_reconciled_result() -> None:
    async def scenario() -> None:
        net = Net()
        net.replicas["a"].store(REF, (V2,))
        net.replicas["b"].store(REF, (V2,))
        net.replicas["c"].store(REF, (V1,))
        c = coordinator(net)
        read = await c.get(WHERE, 3, 1.0)
        assert read.versions == (V2,)
        for _ in range(100):  # the repair runs in the background: poll, bounded
            if net.replicas["c"].fetch(REF) == (V2,):
                break
            await asyncio.sleep(0)
        assert net.replicas["c"].fetch(REF) == (V2,) and c.read_repairs == 1
        await c.close()

    asyncio.run(scenario())

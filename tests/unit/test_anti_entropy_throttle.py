"""Anti-entropy yields to a write load (dynamo_mode/anti_entropy.py `Throttle`): with a
fake clock and write counter, a round per 0.25 s of the clock."""

from __future__ import annotations

import asyncio

from dynamo_mode.anti_entropy import AntiEntropy, Throttle

ROUND_S = 0.25


class World:
    def __init__(self) -> None:
        self.now = 0.0
        self.writes = 0

    def throttle(self) -> Throttle:
        return Throttle(lambda: self.writes, lambda: self.now, busy_writes_per_s=100.0)

    def rounds(self, throttle: Throttle, seconds: float, writes_per_s: float) -> list[bool]:
        out = []
        for _ in range(round(seconds / ROUND_S)):
            self.now += ROUND_S
            self.writes += round(writes_per_s * ROUND_S)
            out.append(throttle.allow())
        return out


def test_an_idle_or_lightly_written_node_exchanges_every_round() -> None:
    world = World()
    throttle = world.throttle()
    assert all(world.rounds(throttle, 10, writes_per_s=0))
    assert all(world.rounds(throttle, 10, writes_per_s=80))  # under 100 a second
    assert throttle.deferred == 0


def test_a_busy_node_exchanges_once_per_busy_interval_and_never_stops() -> None:
    world = World()
    throttle = world.throttle()
    allowed = world.rounds(throttle, 40, writes_per_s=1000)
    assert sum(allowed) == 10  # 40 s at one exchange per 4 s
    assert throttle.deferred == len(allowed) - 10


def test_exchanges_resume_every_round_once_the_load_ends() -> None:
    world = World()
    throttle = world.throttle()
    world.rounds(throttle, 8, writes_per_s=1000)
    after = world.rounds(throttle, 2, writes_per_s=0)
    assert after[1:] == [True] * (len(after) - 1)  # the first round still saw the burst


def test_the_loop_skips_a_deferred_round_without_exchanging() -> None:
    exchanged = []

    class Probe(AntiEntropy):
        async def exchange_once(self, partition: int | None = None) -> None:  # type: ignore[override]
            exchanged.append(partition)

    world = World()
    probe = Probe(None, None, "n1", lambda: None)  # type: ignore[arg-type]
    probe.throttle = world.throttle()
    for _ in range(8):  # two seconds of a busy node: the first round, then none for 4 s
        world.now += ROUND_S
        world.writes += 250
        asyncio.run(probe.round_once())
    assert exchanged == [None]

"""Bulk streams take turns on the event loop (adapters/turns.py): whatever else
is ready runs between every PER_ITERATION of their slices, however many wait."""

import asyncio
import itertools

from adapters.turns import PER_ITERATION, bulk_turn

BULK_STREAMS = 20


async def interleaving(bulk_yield) -> list[int]:
    """How many bulk slices ran between two steps of a task that only yields."""
    log: list[str] = []
    other_done = asyncio.Event()

    async def bulk() -> None:
        while not other_done.is_set():
            await bulk_yield()
            log.append("bulk")

    async def other() -> None:
        for _ in range(50):
            await asyncio.sleep(0)
            log.append("other")
        other_done.set()

    await asyncio.gather(*(bulk() for _ in range(BULK_STREAMS)), other())
    last_other = len(log) - log[::-1].index("other")
    return [len(list(run)) for kind, run in itertools.groupby(log[:last_other]) if kind == "bulk"]


async def test_other_work_runs_between_every_few_bulk_slices() -> None:
    assert max(await interleaving(bulk_turn)) <= PER_ITERATION


async def test_a_bare_yield_lets_every_bulk_stream_run_first() -> None:
    """What bulk_turn replaces: sleep(0) only sends a stream to the back of the queue."""
    assert max(await interleaving(lambda: asyncio.sleep(0))) == BULK_STREAMS


async def test_a_cancelled_waiter_gives_its_turn_away_and_the_rest_go_in_order() -> None:
    order: list[int] = []

    async def wait(i: int) -> None:
        await bulk_turn()
        order.append(i)

    tasks = [asyncio.create_task(wait(i)) for i in range(6)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 2, 3, 4, 5]

"""Bulk work takes turns: however many streams flood, whatever else is ready
on the event loop runs between every few of their slices.

`await asyncio.sleep(0)` after each slice only puts a stream at the back of
the ready queue: with 200 flooding streams a loop iteration still runs 200
slices, and a call needing ten iterations waits for 2,000 of them (the flood
soak measured 0.4-0.6 s per short Generate while slow callers' windows filled).
`bulk_turn()` instead queues the stream and lets at most PER_ITERATION queued
streams go on per loop iteration, in arrival order.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque

PER_ITERATION = 2


class Turns:
    """A FIFO of waiting bulk streams, released PER_ITERATION per iteration of one loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, per_iteration: int = PER_ITERATION) -> None:
        self._loop, self._per_iteration = loop, per_iteration
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._releasing = False

    async def take(self) -> None:
        """Waits for this stream's turn (at least one loop iteration)."""
        turn = self._loop.create_future()
        self._waiting.append(turn)
        if not self._releasing:
            self._releasing = True
            self._loop.call_soon(self._release)
        await turn

    def _release(self) -> None:
        released = 0
        while self._waiting and released < self._per_iteration:
            turn = self._waiting.popleft()
            if not turn.done():  # a cancelled waiter gives its turn away
                turn.set_result(None)
                released += 1
        if self._waiting:
            self._loop.call_soon(self._release)
        else:
            self._releasing = False


_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Turns] = weakref.WeakKeyDictionary()


async def bulk_turn() -> None:
    """Yields the event loop until this bulk stream's turn comes (see the module doc)."""
    loop = asyncio.get_running_loop()
    turns = _TURNS.get(loop)
    if turns is None:
        turns = _TURNS[loop] = Turns(loop)
    await turns.take()

"""Bulk work takes turns: however many streams flood, whatever else is ready
on the event loop runs between every few of their slices.

`await asyncio.sleep(0)` after each slice only puts a stream at the back of
the ready queue: with 200 flooding streams a loop iteration still runs 200
slices, and a call needing ten iterations waits for 2,000 of them (the flood
soak measured 0.4-0.6 s per short Generate while slow callers' windows filled).
`bulk_turn()` instead queues the stream and lets at most PER_ITERATION queued
streams go on at a time, in arrival order; and each such batch waits as long as
the loop took since the last one (at most MAX_PAUSE), so bulk work gets at most
about half of the loop's time, however much of it is queued: the rest of the
time the loop serves everything else (a short Generate under 200 floods: p99
from 6.9x to 0.5-1.4x its unloaded value in the flood soak). Bulk streams pause
only while more than PER_ITERATION of them wait; one that reads tokens never does.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque

PER_ITERATION = 2
MAX_PAUSE = 0.01  # seconds


class Turns:
    """A FIFO of waiting bulk streams of one loop, released PER_ITERATION at a
    time, each batch after a pause as long as the loop took since the last."""

    def __init__(self, loop: asyncio.AbstractEventLoop, per_iteration: int = PER_ITERATION) -> None:
        self._loop, self._per_iteration = loop, per_iteration
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._releasing = False
        self._released_at = 0.0

    async def take(self) -> None:
        """Waits for this stream's turn (at least one loop iteration)."""
        turn = self._loop.create_future()
        self._waiting.append(turn)
        if not self._releasing:
            self._releasing = True
            self._released_at = self._loop.time()
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
            now = self._loop.time()
            self._loop.call_later(min(now - self._released_at, MAX_PAUSE), self._release)
            self._released_at = now
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

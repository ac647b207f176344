"""Envoy's retry budget, per route: retries pending (backing off before their
attempt) may be at most `budget_percent` of the route's requests (attempts in
flight plus retries pending), but never fewer than `min_retry_concurrency`,
so a quiet route can still retry. On a saturated pool every attempt fails and
every caller would retry; the budget keeps retries from multiplying the load:
a refused retry ends the request with the error it already has. Pure
bookkeeping: the dispatcher calls `begin`/`end` around each attempt, asks
`can_retry` before backing off, and holds `retrying()` while it backs off.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


class RetryBudget:
    def __init__(self, budget_percent: float = 20.0, min_retry_concurrency: int = 3) -> None:
        self._fraction = budget_percent / 100.0
        self._minimum = min_retry_concurrency
        self.attempts = 0
        self.pending = 0

    def can_retry(self) -> bool:
        """True when one more pending retry fits the budget."""
        requests = self.attempts + self.pending + 1
        return self.pending + 1 <= max(self._minimum, self._fraction * requests)

    @contextlib.contextmanager
    def retrying(self) -> Iterator[None]:
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    def begin(self) -> None:
        self.attempts += 1

    def end(self) -> None:
        self.attempts -= 1

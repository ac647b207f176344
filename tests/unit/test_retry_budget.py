"""RetryBudget bookkeeping: pending retries within a share of the route's
requests, with a floor."""

from contextlib import ExitStack

from gateway.routing.retry_budget import RetryBudget


def test_the_minimum_allows_retries_on_a_quiet_route():
    budget = RetryBudget(budget_percent=20, min_retry_concurrency=2)
    with ExitStack() as pending:
        assert budget.can_retry()
        pending.enter_context(budget.retrying())
        assert budget.can_retry()
        pending.enter_context(budget.retrying())
        assert not budget.can_retry()
    assert budget.can_retry() and budget.pending == 0


def test_retries_scale_with_the_attempts_in_flight():
    budget = RetryBudget(budget_percent=20, min_retry_concurrency=0)
    for _ in range(48):
        budget.begin()
    with ExitStack() as pending:
        allowed = 0
        while budget.can_retry():
            pending.enter_context(budget.retrying())
            allowed += 1
        assert allowed == 12  # 12 of 60 requests: a 13th pending retry would pass 20%
    for _ in range(48):
        budget.end()
    assert (budget.attempts, budget.pending) == (0, 0)


def test_a_zero_budget_without_a_minimum_never_retries():
    budget = RetryBudget(budget_percent=0, min_retry_concurrency=0)
    budget.begin()
    assert not budget.can_retry()

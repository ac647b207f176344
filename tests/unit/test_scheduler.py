"""Admission: capacity, the FIFO queue, spill, cancellation — the Scheduler
with in-process slots, an injected clock, and real asyncio waiting."""

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import QueueConfig, SpillConfig
from gateway.errors import DeadlineExceeded, LimitExceeded
from gateway.metrics import Metrics
from gateway.routing.router import Route
from gateway.routing.state import Target
from gateway.routing.strategies import SmoothWeightedRoundRobin
from gateway.scheduling.load import BackendLoad
from gateway.scheduling.prefix import PrefixIndex
from gateway.scheduling.signals import LoadReport
from gateway.scheduling.scheduler import Prompt, Scheduler
from gateway.scheduling.slots import MemorySlots

LOCAL_A, LOCAL_B, CLOUD = Target("a", "m"), Target("b", "m"), Target("cloud", "m", priority=1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(capacity: dict[str, int | None], workers: int = 1) -> tuple[Scheduler, CollectorRegistry, Clock]:
    registry, clock = CollectorRegistry(), Clock()
    metrics = Metrics(registry, "test")
    loads = {name: BackendLoad(name, cap) for name, cap in capacity.items()}
    return Scheduler(loads, MemorySlots(workers), PrefixIndex(), metrics, clock), registry, clock


def route(*targets: Target, strategy: str = "weighted_round_robin", queue: QueueConfig | None = None,
          spill: SpillConfig | None = None) -> Route:
    return Route("chat", targets, SmoothWeightedRoundRobin(), strategy_name=strategy, queue=queue or QueueConfig(),
                 spill=spill)


async def queued(scheduler: Scheduler, n: int) -> None:
    """Yields to the loop until n requests wait (no sleeping)."""
    for _ in range(1000):
        if scheduler.waiting() >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"expected {n} waiting, got {scheduler.waiting()}")


def sample(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_unlimited_targets_are_always_admitted_at_once():
    scheduler, _, _ = make({"a": None})
    r = route(LOCAL_A)
    admissions = [await scheduler.admit(r, [LOCAL_A], Prompt(), None) for _ in range(50)]
    assert {a.target for a in admissions} == {LOCAL_A} and all(a.queued == 0 for a in admissions)


async def test_the_strategy_picks_among_targets_with_a_free_slot():
    scheduler, _, _ = make({"a": 1, "b": 3})
    r = route(LOCAL_A, LOCAL_B)
    picks = [(await scheduler.admit(r, [LOCAL_A, LOCAL_B], Prompt(), None)).target.backend for _ in range(4)]
    assert sorted(picks) == ["a", "b", "b", "b"]


async def test_a_full_tier_queues_and_a_released_slot_goes_to_the_oldest_waiter():
    scheduler, metrics, _ = make({"a": 1})
    r = route(LOCAL_A)
    running = await scheduler.admit(r, [LOCAL_A], Prompt(), None)
    first = asyncio.create_task(scheduler.admit(r, [LOCAL_A], Prompt(), None))
    await queued(scheduler, 1)
    second = asyncio.create_task(scheduler.admit(r, [LOCAL_A], Prompt(), None))
    await queued(scheduler, 2)
    assert sample(metrics, "turnout_queue_depth", route="chat") == 2
    await scheduler.release(running, ok=True)
    admitted = await first
    assert not second.done() and admitted.reason == "queue"
    await scheduler.release(admitted, ok=True)
    await scheduler.release(await second, ok=True)
    assert scheduler.slots.held("a") == 0 and sample(metrics, "turnout_queue_depth", route="chat") == 0


async def test_a_newcomer_does_not_overtake_the_queue():
    scheduler, _, _ = make({"a": 1})
    r = route(LOCAL_A)
    running = await scheduler.admit(r, [LOCAL_A], Prompt(), None)
    waiter = asyncio.create_task(scheduler.admit(r, [LOCAL_A], Prompt(), None))
    await queued(scheduler, 1)
    newcomer = asyncio.create_task(scheduler.admit(r, [LOCAL_A], Prompt(), None))
    await queued(scheduler, 2)
    await scheduler.release(running, ok=True)
    assert (await waiter).target == LOCAL_A and not newcomer.done()
    newcomer.cancel()


async def test_cancelling_while_queued_frees_the_place_at_once():
    scheduler, _, _ = make({"a": 1})
    r = route(LOCAL_A)
    running = await scheduler.admit(r, [LOCAL_A], Prompt(), None)
    cancelled = asyncio.create_task(scheduler.admit(r, [LOCAL_A], Prompt(), None))
    await queued(scheduler, 1)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert scheduler.waiting() == 0
    await scheduler.release(running, ok=True)
    assert scheduler.slots.held("a") == 0


async def test_a_full_queue_is_resource_exhausted_with_a_retry_hint():
    scheduler, _, _ = make({"a": 1})
    r = route(LOCAL_A, queue=QueueConfig(max_size=1))
    await scheduler.admit(r, [LOCAL_A], Prompt(), None)
    waiter = asyncio.create_task(scheduler.admit(r, [LOCAL_A], Prompt(), None))
    await queued(scheduler, 1)
    with pytest.raises(LimitExceeded) as raised:
        await scheduler.admit(r, [LOCAL_A], Prompt(), None)
    assert "queue is full" in raised.value.message and raised.value.retry_after > 0
    waiter.cancel()


async def test_past_max_wait_without_a_next_tier_is_resource_exhausted():
    scheduler, _, _ = make({"a": 1})
    r = route(LOCAL_A, queue=QueueConfig(max_wait=0))
    await scheduler.admit(r, [LOCAL_A], Prompt(), None)
    with pytest.raises(LimitExceeded, match="no slot freed within 0s"):
        await scheduler.admit(r, [LOCAL_A], Prompt(), None)


async def test_past_max_wait_the_next_tier_serves():
    scheduler, metrics, _ = make({"a": 1, "cloud": None})
    r = route(LOCAL_A, CLOUD, queue=QueueConfig(max_wait=0))
    await scheduler.admit(r, [LOCAL_A, CLOUD], Prompt(), None)
    admission = await scheduler.admit(r, [LOCAL_A, CLOUD], Prompt(), None)
    assert (admission.target, admission.reason) == (CLOUD, "spill")
    assert sample(metrics, "turnout_spills_total", route="chat") == 1


async def test_the_callers_deadline_ends_the_wait():
    scheduler, _, clock = make({"a": 1})
    r = route(LOCAL_A)
    await scheduler.admit(r, [LOCAL_A], Prompt(), None)
    with pytest.raises(DeadlineExceeded):
        await scheduler.admit(r, [LOCAL_A], Prompt(), deadline=clock.now)


async def test_spill_sends_only_the_overflow_to_the_next_tier():
    scheduler, metrics, _ = make({"a": 2, "b": 2, "cloud": None})
    r = route(LOCAL_A, LOCAL_B, CLOUD, spill=SpillConfig())
    pool = [LOCAL_A, LOCAL_B, CLOUD]
    placed = [(await scheduler.admit(r, pool, Prompt(), None)).target.backend for _ in range(7)]
    assert sorted(placed[:4]) == ["a", "a", "b", "b"] and placed[4:] == ["cloud"] * 3
    assert sample(metrics, "turnout_spills_total", route="chat") == 3


async def test_spill_at_a_utilisation_threshold_keeps_headroom():
    scheduler, _, _ = make({"a": 5, "cloud": None})
    r = route(LOCAL_A, CLOUD, spill=SpillConfig(utilization=0.8))
    placed = [(await scheduler.admit(r, [LOCAL_A, CLOUD], Prompt(), None)).target.backend for _ in range(6)]
    assert placed == ["a"] * 4 + ["cloud"] * 2


async def test_spill_waits_for_a_slot_when_the_expected_wait_is_short():
    scheduler, _, _ = make({"a": 1, "cloud": None})
    scheduler.loads["a"].learn_service(0.2)  # a slot frees within ~0.1 s
    r = route(LOCAL_A, CLOUD, spill=SpillConfig(max_queue_wait=1.0))
    running = await scheduler.admit(r, [LOCAL_A, CLOUD], Prompt(), None)
    waiting = asyncio.create_task(scheduler.admit(r, [LOCAL_A, CLOUD], Prompt(), None))
    await queued(scheduler, 1)
    await scheduler.release(running, ok=True)
    assert (await waiting).target == LOCAL_A


async def test_workers_each_hold_their_share_of_a_capacity():
    scheduler, _, _ = make({"a": 4}, workers=2)
    r = route(LOCAL_A, queue=QueueConfig(max_wait=0))
    await scheduler.admit(r, [LOCAL_A], Prompt(), None)
    await scheduler.admit(r, [LOCAL_A], Prompt(), None)
    with pytest.raises(LimitExceeded):
        await scheduler.admit(r, [LOCAL_A], Prompt(), None)


async def test_adaptive_waits_for_the_backend_holding_the_prompt_when_that_is_cheaper():
    scheduler, metrics, _ = make({"a": 1, "b": 1})
    for name in ("a", "b"):
        scheduler.loads[name].prefill_per_token = 0.01
        scheduler.loads[name].learn_service(0.5)
    r = route(LOCAL_A, LOCAL_B, strategy="adaptive")
    prompt = Prompt(tuple(bytes([i]) * 8 for i in range(30)), tokens=2000)
    scheduler.index.record("a/m", prompt.hashes)
    running = await scheduler.admit(r, [LOCAL_A, LOCAL_B], prompt, None)
    assert (running.target, running.reason) == (LOCAL_A, "prefix")
    waiting = asyncio.create_task(scheduler.admit(r, [LOCAL_A, LOCAL_B], prompt, None))
    await queued(scheduler, 1)
    await scheduler.release(running, ok=True)
    assert (await waiting).target == LOCAL_A
    assert sample(metrics, "turnout_prefix_affinity_total", route="chat", result="hit") == 2


async def test_a_request_that_can_use_an_idle_backend_is_not_held_behind_another_routes_waiter():
    scheduler, _, _ = make({"a": 1, "b": 1})
    only_a, a_or_b = route(LOCAL_A), Route("a-or-b", (LOCAL_A, LOCAL_B), SmoothWeightedRoundRobin())
    await scheduler.admit(only_a, [LOCAL_A], Prompt(), None)
    waiter = asyncio.create_task(scheduler.admit(only_a, [LOCAL_A], Prompt(), None))
    await queued(scheduler, 1)
    admission = await scheduler.admit(a_or_b, [LOCAL_A, LOCAL_B], Prompt(), None)
    assert admission.target == LOCAL_B and scheduler.waiting() == 1
    waiter.cancel()


async def test_a_waiting_adaptive_request_does_not_count_itself_ahead_of_itself():
    # a holds the whole 900-token prompt and its request is due to end; b is free but would
    # prefill 0.9 s. Re-weighing while it waits, the request must keep waiting for a.
    scheduler, _, clock = make({"a": 1, "b": 1})
    for name in ("a", "b"):
        scheduler.loads[name].learn_service(1.0)
        scheduler.loads[name].prefill_per_token = 0.001
    r = route(LOCAL_A, LOCAL_B, strategy="adaptive")
    prompt = Prompt(tuple(bytes([i]) * 8 for i in range(14)), tokens=900)
    scheduler.index.record("a/m", prompt.hashes)
    clock.now = 99.5
    running = await scheduler.admit(r, [LOCAL_A], prompt, None)
    clock.now = 100.0
    waiting = asyncio.create_task(scheduler.admit(r, [LOCAL_A, LOCAL_B], prompt, None))
    await queued(scheduler, 1)
    clock.now = 100.5  # the patience (0.5 s) has run out: the waiter weighs again on its next wake
    await asyncio.sleep(0.6)
    assert not waiting.done()
    await scheduler.release(running, ok=True)
    assert (await waiting).target == LOCAL_A


async def test_a_slot_freeing_where_the_model_would_load_is_not_handed_to_an_adaptive_waiter():
    # m is loaded on a only; b runs another model. A request for m waits for a; when b's slot
    # frees, even after the waiter's patience ran out, taking it would load m on b and evict
    # the model b's own requests use: the slot is freed instead, and the waiter gets a's.
    scheduler, _, clock = make({"a": 1, "b": 1})
    for name, loaded in (("a", "m"), ("b", "other")):
        scheduler.loads[name].learn_service(1.0)
        scheduler.loads[name].load_time = 1.5
        scheduler.loads[name].update(LoadReport(running=0, waiting=0, loaded_models=frozenset({loaded})), 0, clock.now)
    r = route(LOCAL_A, LOCAL_B, strategy="adaptive")
    on_a = await scheduler.admit(r, [LOCAL_A, LOCAL_B], Prompt(), None)
    on_b = await scheduler.admit(route(Target("b", "other")), [Target("b", "other")], Prompt(), None)
    assert on_a.target == LOCAL_A
    waiting = asyncio.create_task(scheduler.admit(r, [LOCAL_A, LOCAL_B], Prompt(), None))
    await queued(scheduler, 1)
    clock.now += 2.0  # past the waiter's patience
    await scheduler.release(on_b, ok=True)
    assert not waiting.done() and scheduler.slots.held("b") == 0
    await scheduler.release(on_a, ok=True)
    assert (await waiting).target == LOCAL_A

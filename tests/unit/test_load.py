"""What the scheduler learns and believes of one backend, over an injected clock."""

import pytest

from gateway.scheduling.load import DEFAULT_LOAD_TIME, RESIDENT_FOR, BackendLoad, Rates, pooled
from gateway.scheduling.signals import LoadReport

NOW = 1000.0


def test_configured_capacity_wins_over_the_discovered_one():
    load = BackendLoad("a", configured_capacity=3)
    load.discovered_capacity = 8
    assert load.capacity == 3
    assert BackendLoad("b").capacity is None


def test_a_report_goes_stale_and_then_says_nothing():
    load = BackendLoad("a", stale_after=1.5)
    load.update(LoadReport(running=2, waiting=1), own_in_flight=0, now=NOW)
    assert load.reported_busy(0, NOW + 1) == 3
    assert load.reported_busy(0, NOW + 2) is None


def test_reported_load_moves_with_what_turnout_started_since_the_poll():
    load = BackendLoad("a")
    load.update(LoadReport(running=2, waiting=0), own_in_flight=1, now=NOW)
    assert load.reported_busy(own_in_flight=3, now=NOW) == 4
    assert load.reported_busy(own_in_flight=0, now=NOW) == 1


def test_ollama_ps_decides_residency_with_untagged_names_meaning_latest():
    load = BackendLoad("a")
    load.update(LoadReport(loaded_models=frozenset({"llama3:latest"})), 0, NOW)
    assert load.resident("llama3", NOW) is True
    assert load.resident("qwen3:8b", NOW) is False


def test_a_model_served_after_the_last_poll_is_resident():
    load = BackendLoad("a")
    load.update(LoadReport(loaded_models=frozenset()), 0, NOW)
    load.learn_first_token("qwen3:8b", 0.2, 0, None, NOW + 0.1)
    assert load.resident("qwen3:8b", NOW + 0.2) is True
    assert load.loaded(NOW + 0.2) == ["qwen3:8b"]


def test_without_reports_residency_is_remembered_for_ollamas_keep_alive_then_unknown():
    load = BackendLoad("a")
    assert load.resident("m", NOW) is None
    load.learn_first_token("m", 0.2, 0, None, NOW)
    assert load.resident("m", NOW + RESIDENT_FOR - 1) is True
    assert load.resident("m", NOW + RESIDENT_FOR + 1) is None


def test_a_single_model_server_that_reports_load_holds_its_model():
    load = BackendLoad("a")
    load.update(LoadReport(running=0, waiting=0), 0, NOW)
    assert load.resident("smollm2", NOW) is True
    load.learn_first_token("smollm2", 0.2, 0, True, NOW)
    load.update(LoadReport(running=0, waiting=0), 0, NOW + 1)
    assert load.loaded(NOW + 1) == ["smollm2"]


def test_prefill_rate_is_learned_beyond_the_first_token_base_and_cold_loads_from_the_rest():
    load = BackendLoad("a")
    load.learn_first_token("m", 2.0, 1000, True, NOW)
    assert load.prefill_per_token == 0.002
    load.learn_first_token("m", 0.05, 0, True, NOW)  # nothing to compute: the base time
    assert load.prefill_per_token == 0.002 and load.first_token_base == 0.05
    load.learn_first_token("m", 1.05, 500, True, NOW)  # 1 s of prefill beyond the base: 0.002 s/token
    assert load.prefill_per_token == pytest.approx(0.002)
    load.learn_first_token("m", 7.05, 1000, False, NOW)
    assert load.load_time == pytest.approx(5.0)


def test_the_prefill_inside_the_base_time_is_not_counted_twice():
    # 0.05 s base + 1 ms per token: cached turns with 200 new tokens take 0.25 s, a 300-token prompt 0.35 s.
    load = BackendLoad("a")
    load.learn_first_token("m", 0.25, 200, True, NOW)
    load.learn_first_token("m", 0.35, 300, True, NOW)
    assert load.prefill_per_token == pytest.approx(0.001)


def test_a_cached_prompt_does_not_teach_a_prefill_rate():
    """A request whose prompt is cached waits the base time for its few
    uncached tokens: taken as prefill it would make that backend look many
    times slower than it is."""
    load = BackendLoad("a")
    for _ in range(10):
        load.learn_first_token("m", 0.06, 100, True, NOW)
    assert load.prefill_per_token is None and load.first_token_base == pytest.approx(0.06)


def test_a_slot_held_by_a_long_uncached_prompt_frees_later_than_one_held_by_a_cached_conversation():
    load = BackendLoad("a")
    load.learn_first_token("m", 0.05, 0, True, NOW)  # base 0.05 s
    load.learn_first_token("m", 1.05, 1000, True, NOW)  # 0.001 s per uncached token
    load.learn_service(0.45, after_first_token=0.2)  # answers take 0.2 s
    load.begin("cached", NOW, uncached_tokens=100)  # 0.05 + 0.1 + 0.2
    assert load.expected_wait(0, 1, NOW) == pytest.approx(0.35)
    load.end("cached")
    load.begin("uncached", NOW, uncached_tokens=3000)  # 0.05 + 3 + 0.2
    assert load.expected_wait(0, 1, NOW) == pytest.approx(3.25)
    load.end("uncached")
    load.learn_first_token("m", 2.0, 0, False, NOW)  # a cold load: 1.95 s beyond the base
    load.begin("cold", NOW, uncached_tokens=0, cold=True)
    assert load.expected_wait(0, 1, NOW) == pytest.approx(0.05 + 1.95 + 0.2)


def test_expected_wait_counts_queue_position_and_the_age_of_running_requests():
    load = BackendLoad("a")
    load.learn_service(4.0)
    load.begin("x", NOW - 1.0)  # 3 s left of a 4 s average
    load.begin("y", NOW - 3.5)  # 0.5 s left
    assert load.expected_wait(0, 2, NOW) == 0.5
    assert load.expected_wait(1, 2, NOW) == 3.0
    assert load.expected_wait(2, 2, NOW) == 4.5


def test_a_request_running_past_the_average_is_expected_to_overrun_as_long_again():
    load = BackendLoad("a")
    load.learn_service(1.0)
    load.begin("x", NOW - 10.0)
    assert load.expected_wait(0, 1, NOW) == 9.0
    load.end("x")
    assert load.expected_wait(0, 1, NOW) == 0.0


def test_a_backend_that_has_not_learned_a_rate_guesses_what_the_others_learned():
    a, b, fresh = BackendLoad("a"), BackendLoad("b"), BackendLoad("c")
    assert pooled([a, b, fresh]) == Rates()
    a.learn_first_token("m", 2.0, 0, False, NOW)  # a 2 s load
    b.learn_first_token("m", 1.0, 0, False, NOW)
    b.learn_first_token("m", 0.5, 1000, True, NOW)  # 0.5 ms per token
    pool = pooled([a, b, fresh])
    assert pool == Rates(prefill_per_token=0.0005, load_time=1.5)
    assert fresh.rates(pool) == pool and a.rates(pool) == Rates(0.0005, 2.0)
    assert fresh.rates(Rates()).load_time == DEFAULT_LOAD_TIME


def test_before_a_warm_request_ends_a_slot_is_guessed_to_take_the_base_and_the_answer_time():
    load = BackendLoad("a")
    load.learn_first_token("m", 0.05, 10, True, NOW)
    load.learn_service(None, after_first_token=0.25)  # a cold request: its answer time teaches, its slot time not
    assert load.service_time is None and load.rates(Rates()).service_time == pytest.approx(0.3)
    load.begin("x", NOW)
    load.begin("y", NOW)
    assert load.expected_wait(2, 2, NOW) == pytest.approx(0.6)  # both running end at 0.3, then one more turn


def test_slots_held_elsewhere_are_expected_to_free_in_half_a_service_time_not_at_once():
    load = BackendLoad("a")
    load.learn_service(2.0)
    assert load.expected_wait(0, 2, NOW, held=2) == 1.0  # both held by another replica
    load.begin("x", NOW - 0.5)
    assert load.expected_wait(0, 2, NOW, held=2) == 1.0  # one known (1.5 s left), one not
    assert load.expected_wait(0, 2, NOW, held=1) == 0.0  # a slot is free

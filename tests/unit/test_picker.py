"""The adaptive choice as a pure function over endpoint snapshots."""

from gateway.routing.state import Target
from gateway.scheduling.picker import Endpoint, adaptive, free_only

A, B, C = Target("a", "m"), Target("b", "m"), Target("c", "m", weight=2)
PROMPT, BLOCK = 2000, 64  # tokens


def test_nothing_to_choose_from_is_none():
    assert adaptive([], PROMPT, BLOCK) is None


def test_a_resident_model_wins_over_a_cold_load():
    choice = adaptive([Endpoint(A, resident=False), Endpoint(B, resident=True, in_flight=3)], PROMPT, BLOCK)
    assert (choice.target, choice.reason) == (B, "residency")


def test_unknown_residency_is_preferred_to_a_known_cold_load():
    assert adaptive([Endpoint(A, resident=False), Endpoint(B)], PROMPT, BLOCK).target == B


def test_the_longest_cached_prefix_wins_among_free_targets():
    choice = adaptive([Endpoint(A, cached_blocks=5), Endpoint(B, cached_blocks=20), Endpoint(C)], PROMPT, BLOCK)
    assert (choice.target, choice.reason) == (B, "prefix")


def test_cache_affinity_holds_while_the_wait_costs_less_than_the_prefill_saved():
    # 20 cached blocks = 1,280 tokens at 10 ms/token: 12.8 s saved; a 2 s wait is worth it.
    cached = Endpoint(A, in_flight=2, capacity=2, cached_blocks=20, wait=2.0, prefill_per_token=0.01)
    idle = Endpoint(B, capacity=2, prefill_per_token=0.01)
    choice = adaptive([cached, idle], PROMPT, BLOCK)
    assert (choice.target, choice.reason, choice.endpoint.free) == (A, "prefix", False)


def test_cache_affinity_yields_when_the_wait_costs_more_than_the_prefill_saved():
    # On a fast engine (0.1 ms/token) the same prefix saves 0.13 s: not worth a 2 s wait.
    cached = Endpoint(A, in_flight=2, capacity=2, cached_blocks=20, wait=2.0, prefill_per_token=0.0001)
    idle = Endpoint(B, capacity=2, prefill_per_token=0.0001)
    choice = adaptive([cached, idle], PROMPT, BLOCK)
    assert (choice.target, choice.reason) == (B, "load")


def test_equal_costs_go_to_the_least_load_relative_to_weight():
    # c has weight 2: 3 running / 2 = 1.5 < a's 2 / 1.
    assert adaptive([Endpoint(A, in_flight=2), Endpoint(C, in_flight=3)], PROMPT, BLOCK).target == C


def test_a_servers_own_larger_count_is_its_load():
    busy_elsewhere = Endpoint(A, in_flight=0, reported_busy=6)
    assert adaptive([busy_elsewhere, Endpoint(B, in_flight=1)], PROMPT, BLOCK).target == B


def test_a_prompt_that_would_push_out_recently_used_prefixes_goes_where_there_is_room():
    # 10 recently used blocks evicted = 640 tokens recomputed later, at 1 ms/token: 0.64 s.
    crowded = Endpoint(A, evicts=10, cache_fill=0.95, prefill_per_token=0.001)
    roomy = Endpoint(B, in_flight=1, capacity=2, cache_fill=0.5, prefill_per_token=0.001)
    assert adaptive([crowded, roomy], PROMPT, BLOCK).target == B


def test_a_new_prompt_settles_in_the_emptiest_cache_before_the_least_loaded_one():
    full = Endpoint(A, in_flight=0, capacity=2, cache_fill=0.6)
    empty = Endpoint(B, in_flight=1, capacity=2, cache_fill=0.3)
    assert adaptive([full, empty], PROMPT, BLOCK).target == B


def test_a_cache_of_unknown_size_is_neither_empty_nor_full():
    # b does not say its cache size: among the tied, load decides, not a fill b does not have.
    known = Endpoint(A, in_flight=0, capacity=2, cache_fill=0.6)
    unknown = Endpoint(B, in_flight=1, capacity=2)
    assert adaptive([unknown, known], PROMPT, BLOCK).target == A
    # Fills a few blocks apart are alike: load decides.
    assert adaptive([Endpoint(A, in_flight=1, cache_fill=0.31), Endpoint(B, cache_fill=0.34)], PROMPT, BLOCK).target == B


def test_ties_among_busy_targets_keep_the_loaded_model_and_the_cached_prefix():
    # A 5 s wait for the resident model and a 1.5 s load after a 0.5 s wait cost about the same:
    # the tie must not load the model a second time.
    resident = Endpoint(A, in_flight=2, capacity=2, resident=True, wait=5.0)
    cold = Endpoint(B, in_flight=2, capacity=2, resident=False, wait=0.5, load_time=1.5)
    assert adaptive([cold, resident], 0, BLOCK).target == A
    cached = Endpoint(A, in_flight=2, capacity=2, cached_blocks=2, wait=0.3, prefill_per_token=0.0001)
    other = Endpoint(B, in_flight=2, capacity=2, wait=0.28, prefill_per_token=0.0001)
    assert adaptive([other, cached], 200, BLOCK).target == A


def test_a_waiter_takes_a_freed_slot_only_where_it_costs_no_more_than_what_it_waits_for():
    # a holds the prompt (busy, 0.3 s); b would prefill it all (1.6 s); c is warm, holds nothing,
    # but its wait was what made it dear; d would have to load the model.
    cached = Endpoint(A, in_flight=1, capacity=1, cached_blocks=30, wait=0.3, prefill_per_token=0.001)
    dear = Endpoint(B, in_flight=1, capacity=1, wait=0.1, prefill_per_token=0.001)
    cheap_once_free = Endpoint(C, in_flight=1, capacity=1, cached_blocks=29, wait=5.0, prefill_per_token=0.001)
    cold = Endpoint(Target("d", "m"), in_flight=1, capacity=1, resident=False, load_time=0.0, cached_blocks=30,
                    wait=2.0, prefill_per_token=0.001)
    choice = adaptive([cached, dear, cheap_once_free, cold], PROMPT, BLOCK)
    assert choice.target == A and choice.acceptable == {"a", "c"}


def test_exact_ties_rotate():
    endpoints = [Endpoint(A), Endpoint(B)]
    assert {adaptive(endpoints, PROMPT, BLOCK, turn).target for turn in range(4)} == {A, B}


def test_free_only_keeps_endpoints_below_capacity():
    endpoints = [Endpoint(A, in_flight=2, capacity=2), Endpoint(B, in_flight=1, capacity=2), Endpoint(C, in_flight=9)]
    assert [e.target for e in free_only(endpoints)] == [B, C]

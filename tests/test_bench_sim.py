"""The routing benchmark's simulated engines (bench/sim) cost what they claim
and speak what turnout's load-signal parsers read (driven with plain httpx;
zero delays, so nothing here depends on timing)."""

import asyncio
import json

import httpx

from bench.sim.engine import BLOCK_TOKENS, Engine, Profile, render, reply_for, tokens
from bench.sim.server import SimServer
from bench.sim.workloads import OUTPUT_TOKENS, conversations
from gateway.scheduling.signals import llamacpp_metrics, llamacpp_slots, llamacpp_total_slots, ollama_ps, vllm_metrics

FAST = Profile(slots=1, prefill_per_token=0.0, decode_per_token=0.0, cache_blocks=64, max_loaded=1, output_tokens=4)
SYSTEM = {"role": "system", "content": "policy " * 200}


async def answer(engine: Engine, model: str, messages: list[dict]) -> str:
    return "".join([piece async for piece in engine.generate(model, messages)])


async def test_a_shared_prefix_is_computed_once_and_the_lru_forgets_it():
    engine = Engine(FAST, ("m",))
    first = [SYSTEM, {"role": "user", "content": "one"}]
    await answer(engine, "m", first)
    assert engine.counters.prompt_tokens == tokens(render(first))
    await answer(engine, "m", [SYSTEM, {"role": "user", "content": "two"}])
    cached = engine.counters.cached_tokens
    assert cached == (len(render([SYSTEM])) // (BLOCK_TOKENS * 4)) * BLOCK_TOKENS
    for i in range(8):  # other prompts push the system prompt's blocks out
        await answer(engine, "m", [{"role": "system", "content": f"other {i} " * 200}])
    await answer(engine, "m", first)
    assert engine.counters.cached_tokens == cached


async def test_requests_beyond_the_slots_wait_in_order_and_models_load_and_evict():
    engine = Engine(FAST, ("a", "b"))
    order = []

    async def run(model: str, tag: str):
        async for _ in engine.generate(model, [{"role": "user", "content": tag}]):
            pass
        order.append(tag)

    await asyncio.gather(*(run("a", str(i)) for i in range(4)))
    assert order == ["0", "1", "2", "3"] and engine.counters.max_waiting == 3
    await run("b", "x")
    await run("a", "y")
    assert engine.counters.model_loads == 3 and list(engine.loaded) == ["a"]


async def test_conversations_carry_the_engines_own_answers():
    requests = conversations(seed=1, tenants=2, system_tokens=50, rate=8.0, seconds=2.0, turns=2)
    second = next(r for r in requests if len(r.messages) == 4)
    assert second.messages[2]["content"] == "".join(reply_for(render(list(second.messages[:2])), OUTPUT_TOKENS))
    engine = Engine(Profile(slots=1, prefill_per_token=0.0, decode_per_token=0.0), ("m",))
    assert await answer(engine, "m", list(second.messages[:2])) == second.messages[2]["content"]


async def test_each_personality_answers_what_turnouts_parsers_read():
    llama = SimServer("llamacpp", Engine(Profile(slots=3), ("smol",)))
    vllm = SimServer("vllm", Engine(Profile(slots=2), ("smol",)))
    ollama = SimServer("ollama", Engine(FAST, ("m-a", "m-b")))
    for server in (llama, vllm, ollama):
        await server.start()
    try:
        async with httpx.AsyncClient() as client:
            root = llama.url.removesuffix("/v1")
            assert llamacpp_total_slots((await client.get(root + "/props")).json()) == 3
            assert llamacpp_metrics((await client.get(root + "/metrics")).text).running == 0
            assert llamacpp_slots((await client.get(root + "/slots")).json()).running == 0
            assert vllm_metrics((await client.get(vllm.url.removesuffix("/v1") + "/metrics")).text).waiting == 0
            assert ollama_ps((await client.get(ollama.url + "/api/ps")).json()).loaded_models == frozenset()
            body = {"model": "m-b", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            async with client.stream("POST", ollama.url + "/api/chat", json=body) as response:
                lines = [json.loads(line) async for line in response.aiter_lines() if line]
            assert lines[-1]["done"] and "".join(line["message"]["content"] for line in lines[:-1])
            assert ollama_ps((await client.get(ollama.url + "/api/ps")).json()).loaded_models == {"m-b"}
            body = {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            async with client.stream("POST", llama.url + "/chat/completions", json=body) as response:
                raw = (await response.aread()).decode()
            assert raw.endswith("data: [DONE]\n\n")
            assert llamacpp_metrics((await client.get(root + "/metrics")).text).running == 0
            assert (await client.get(root + "/sim/counters")).json()["requests"] == 1
    finally:
        for server in (llama, vllm, ollama):
            await server.stop()

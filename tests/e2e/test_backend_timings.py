"""What a backend measured and reported reaches `completed`; nothing is invented."""

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import ask, collect


# Ollama docs/api.md, final /api/chat line: durations in nanoseconds (the fake sends those of the docs' example).
async def test_ollama_durations_reach_completed(ollama):
    async with serve(backends_yaml(ollama)) as c:
        completed = (await collect(c.generate.Generate(ask(model="llama3.2:1b"))))[-1].completed
    timings = completed.backend_timings
    assert [timings.load.ToNanoseconds(), timings.prompt_eval.ToNanoseconds(),
            timings.generation.ToNanoseconds(), timings.total.ToNanoseconds()] == [41295167, 24573166, 115959084, 182242375]


async def test_a_backend_that_reports_no_timings_gets_none(openai):
    async with serve(backends_yaml(openai=openai)) as c:
        completed = (await collect(c.generate.Generate(ask(model="gpt-4o-mini"))))[-1].completed
    assert not completed.HasField("backend_timings")
    assert not completed.usage.HasField("cached_prompt_tokens") and not completed.usage.HasField("reasoning_tokens")

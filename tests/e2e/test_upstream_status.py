"""Upstream statuses that do not mean what they seem: a 403 refuses one request
(it does not break the backend), and a 429's wait can come from OpenAI's
x-ratelimit-reset-* headers alone."""

import grpc

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import RetryInfo, ask, details, failure, kinds
from tests.fakes import HttpError


def single_try(extra: str = "") -> str:
    return "routes:\n  - {name: r, retry: {attempts: 1}, targets: [{backend: cloud, model: gpt-4o-mini}]}\n" + extra


# OpenRouter (docs, "Errors"): 403 "Your chosen model requires moderation and your input
# was flagged"; OpenAI: 403 for an unsupported country. The next request may well succeed.
async def test_upstream_403_is_permission_denied_and_does_not_eject_the_backend(ollama, openai):
    openai.script(HttpError(403, "Input was flagged by moderation: harassment"))
    yaml = backends_yaml(ollama, openai) + (
        "outlier_detection: {consecutive_failures: 1}\n"
        "routes:\n  - {name: r, targets: [{backend: cloud, model: gpt-4o-mini, priority: 0}, {backend: local, model: llama3.2:1b, priority: 1}]}\n"
    )
    async with serve(yaml) as c:
        error = await failure(c.generate.Generate(ask(model="r")))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "flagged by moderation" in error.details()
        assert not [r for r in ollama.requests if r.path == "/api/chat"]
        responses = [r async for r in c.generate.Generate(ask(model="r"))]
    assert responses[0].started.backend == "cloud" and kinds(responses)[-1] == "completed"


# OpenAI's rate-limit guide: reset headers are Go durations; the exhausted limit
# (remaining 0) is the one to wait for.
async def test_upstream_429_without_retry_after_takes_retry_info_from_ratelimit_reset(openai):
    headers = {
        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s",
    }
    openai.script(HttpError(429, "Rate limit reached for gpt-4o-mini on tokens per min (TPM)", headers=headers))
    async with serve(backends_yaml(openai=openai) + single_try()) as c:
        error = await failure(c.generate.Generate(ask(model="r")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert details(error, RetryInfo).retry_delay.seconds == 360

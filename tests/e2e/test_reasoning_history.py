"""A session's reasoning goes back to an OpenAI-compatible backend as
`reasoning_content` only when the backend is configured to accept it:
llama.cpp reads it from assistant messages (common/chat.cpp,
common_chat_msgs_parse_oaicompat) and so does vLLM; OpenAI rejects unknown
message fields and DeepSeek's API rejects this one with 400."""

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import ask, collect
from tests.fakes import Reply


async def second_turn(openai, extra: str = "") -> list[dict]:
    openai.script(Reply("4", reasoning=("2+2 ", "is 4")), Reply("8"))
    async with serve(backends_yaml(openai=openai).replace("priority: 1", "priority: 1" + extra)) as c:
        await collect(c.generate.Generate(ask("2+2?", model="gpt-4o-mini", session_id="s1")))
        await collect(c.generate.Generate(ask("and doubled?", model="gpt-4o-mini", session_id="s1")))
    return openai.requests[-1].json["messages"]


async def test_reasoning_is_sent_back_as_reasoning_content_when_the_backend_accepts_it(openai):
    assert await second_turn(openai, ", send_reasoning: true") == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4"},
        {"role": "user", "content": "and doubled?"},
    ]


async def test_reasoning_is_not_sent_to_an_openai_backend_by_default(openai):
    assert (await second_turn(openai))[1] == {"role": "assistant", "content": "4"}

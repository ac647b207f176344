"""Generate's context from a session read newest first, page by page: the same
messages as trimming the whole history, for any history and limits."""

from __future__ import annotations

import random

import pytest

from gateway.config import SessionsConfig
from gateway.domain import Message, Role, ToolCall
from gateway.sessions.conversation import Conversations
from gateway.sessions.history import frames_to_messages, trim
from gateway.sessions.memory import MemoryStore
from gateway.sessions.store import NewFrame, StoreLimits


def _frames(rng: random.Random) -> list[NewFrame]:
    frames = []
    for turn in range(rng.randint(0, 30)):
        frames.append(NewFrame(role=Role.USER, content="u" * rng.randint(0, 200)))
        if rng.random() < 0.3:
            call = ToolCall(id=f"c{turn}", name="get_weather", arguments="{}")
            frames.append(NewFrame(role=Role.ASSISTANT, tool_calls=(call,)))
            frames.append(NewFrame(role=Role.TOOL, content="t" * rng.randint(0, 100), tool_call_id=call.id))
        if rng.random() < 0.1:
            frames.append(NewFrame(role=Role.SYSTEM, content="s"))
        frames.append(NewFrame(role=Role.ASSISTANT, content="a" * rng.randint(0, 300)))
    if frames and rng.random() < 0.2:
        frames.insert(0, NewFrame(role=Role.ASSISTANT, content="leading"))
    return frames


@pytest.mark.parametrize("seed", range(60))
async def test_context_read_newest_first_equals_trimming_the_whole_history(seed: int) -> None:
    rng = random.Random(seed)
    store = MemoryStore(StoreLimits(max_page_size=rng.choice([1, 2, 3, 7, 1_000])))
    system_prompt = rng.choice(["", "be brief"])
    await store.create("s", system_prompt, {}, 60.0)
    frames = _frames(rng)
    if frames:
        await store.append("s", frames, 60.0)
    config = SessionsConfig(store="memory", max_turns=rng.choice([0, 1, 2, 5, 50]),
                            max_tokens=rng.choice([None, 10, 100, 1000, 16384]))
    new = (Message(role=Role.USER, content="now"),)
    everything, token = await store.list_frames("s", 0, False, 0, "")
    while token:
        page, token = await store.list_frames("s", 0, False, 0, token)
        everything += page
    expected = trim(system_prompt, [*frames_to_messages(everything), *new], config.max_turns, config.max_tokens)
    assert list(await Conversations(store, config).context("s", new)) == expected

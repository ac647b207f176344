"""`make soak`: Generate's context from a session of 300 frames of 1 MiB on
sqlite. Only the newest turn fits the default token budget, so only the newest
pages are read: prints the peak memory allocated while building the context."""

import tracemalloc

import pytest

from gateway.config import SessionsConfig
from gateway.domain import Message, Role
from gateway.sessions.conversation import Conversations
from gateway.sessions.sqlite import SqliteStore
from gateway.sessions.store import NewFrame

MIB = 1 << 20


@pytest.mark.soak
async def test_a_session_of_large_frames_reads_only_the_pages_the_trim_keeps(tmp_path):
    store = SqliteStore(str(tmp_path / "sessions.db"))
    await store.open()
    try:
        await store.create("big", "", {}, 600.0)
        for turn in range(150):
            await store.append("big", [NewFrame(role=Role.USER, content=f"{turn}" + "u" * MIB),
                                       NewFrame(role=Role.ASSISTANT, content="a" * MIB)], 600.0)
        conversations = Conversations(store, SessionsConfig(store="sqlite"))
        tracemalloc.start()
        try:
            context = await conversations.context("big", (Message(role=Role.USER, content="now"),))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        await store.close()
    print(f"\nsession history: 300 frames of 1 MiB, context of {len(context)} messages, "
          f"peak {peak / MIB:.1f} MiB allocated while building it")
    assert [m.content for m in context] == ["now"]
    assert peak < 64 * MIB

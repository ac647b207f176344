"""The session store contract, run against memory, sqlite and redis alike."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import pytest

from gateway.domain import Role, ToolCall
from gateway.errors import AlreadyExists, Conflict, InvalidRequest, LimitExceeded, NotFound
from gateway.sessions.store import FrameRecord, NewFrame, SessionStore, StoreLimits
from tests.sessions.conftest import FakeClock, MakeStore

TTL = 3600.0
SHARED = pytest.mark.parametrize("kind", ["sqlite", "redis"])


def frame(content: str = "hi", role: Role = Role.USER) -> NewFrame:
    return NewFrame(role=role, content=content)


async def fill(store: SessionStore, session_id: str, count: int) -> None:
    await store.append(session_id, [frame(str(i)) for i in range(1, count + 1)], TTL)


async def seqs(store: SessionStore, session_id: str, from_seq: int, newest_first: bool, size: int, token: str = ""):
    frames, next_token = await store.list_frames(session_id, from_seq, newest_first, size, token)
    return [f.seq for f in frames], next_token


async def all_frames(store: SessionStore, session_id: str) -> list[FrameRecord]:
    """Every frame, oldest first, by following the page tokens."""
    frames, token = await store.list_frames(session_id, 0, False, 0, "")
    while token:
        page, token = await store.list_frames(session_id, 0, False, 0, token)
        frames += page
    return frames


async def next_of(watch: AsyncIterator[FrameRecord]) -> FrameRecord:
    return await anext(watch)


async def test_create_and_get_return_the_record(store: SessionStore, clock: FakeClock) -> None:
    created = await store.create("s1", "be brief", {"team": "a"}, TTL, owner="k1")
    assert created == await store.get("s1")
    assert (created.id, created.system_prompt, dict(created.metadata), created.owner) == ("s1", "be brief",
                                                                                           {"team": "a"}, "k1")
    assert (created.create_time, created.update_time, created.expire_time) == (clock(), clock(), clock() + TTL)
    assert created.last_seq == 0



async def test_create_with_an_empty_id_picks_a_random_hex_id(store: SessionStore) -> None:
    first, second = await store.create("", "", {}, TTL), await store.create("", "", {}, TTL)
    assert len(first.id) == 32 and int(first.id, 16) >= 0 and first.id != second.id


async def test_create_with_a_taken_id_is_already_exists(store: SessionStore) -> None:
    await store.create("s1", "", {}, TTL)
    with pytest.raises(AlreadyExists, match="'s1'"):
        await store.create("s1", "", {}, TTL)


async def test_get_of_a_missing_session_is_not_found(store: SessionStore) -> None:
    with pytest.raises(NotFound, match="session 'nope' does not exist or has expired"):
        await store.get("nope")


async def test_delete_removes_the_session_and_its_frames(store: SessionStore) -> None:
    await fill(store, "s1", 2)
    await store.delete("s1")
    for call in (store.get("s1"), store.list_frames("s1", 0, False, 0, ""), store.delete("s1")):
        with pytest.raises(NotFound):
            await call
    assert (await store.list_sessions(0, ""))[0] == []
    assert [f.seq for f in await store.append("s1", [frame()], TTL)] == [1]


async def test_list_pages_most_recently_updated_first(store: SessionStore, clock: FakeClock) -> None:
    for session_id in "abcde":
        clock.advance(1)
        await store.create(session_id, "", {}, TTL)
    clock.advance(1)
    await store.append("b", [frame()], TTL)
    first, token = await store.list_sessions(2, "")
    second, token = await store.list_sessions(2, token)
    await store.append("a", [frame()], TTL)
    third, token = await store.list_sessions(2, token)
    assert [r.id for r in first + second] == ["b", "e", "d", "c"]
    assert len(third) <= 2 and token == ""


async def test_list_filters_by_owner(store: SessionStore, clock: FakeClock) -> None:
    await store.create("a", "", {}, TTL, owner="k1")
    await store.create("b", "", {}, TTL, owner="k2")
    clock.advance(1)
    await store.append("c", [frame()], TTL, owner="k1")
    assert [r.id for r in (await store.list_sessions(0, "", owner="k1"))[0]] == ["c", "a"]
    assert {r.id for r in (await store.list_sessions(0, ""))[0]} == {"a", "b", "c"}


async def test_append_assigns_the_next_seqs_and_returns_the_stored_frames(store: SessionStore, clock: FakeClock):
    await store.create("s1", "", {}, TTL)
    call = NewFrame(role=Role.ASSISTANT, tool_calls=(ToolCall("c1", "get_weather", '{"city":"Oslo"}'),),
                    state="waiting_tool", metadata={"agent": "planner"}, backend="gpu-a", model="llama3:8b")
    result = NewFrame(role=Role.TOOL, content="12°C", tool_call_id="c1")
    clock.advance(5)
    added = await store.append("s1", [frame("weather?"), call], TTL)
    added += await store.append("s1", [result], TTL)
    assert [f.seq for f in added] == [1, 2, 3]
    assert all(f.create_time == clock() for f in added)
    assert added == await all_frames(store, "s1")
    assert added[1].tool_calls == call.tool_calls and dict(added[1].metadata) == {"agent": "planner"}
    assert (added[1].state, added[1].backend, added[1].model, added[2].tool_call_id) == (
        "waiting_tool", "gpu-a", "llama3:8b", "c1")
    session = await store.get("s1")
    assert (session.last_seq, session.update_time, session.expire_time) == (3, clock(), clock() + TTL)


async def test_append_to_a_missing_session_creates_it(store: SessionStore) -> None:
    await store.append("new", [frame()], TTL, owner="k1")
    session = await store.get("new")
    assert (session.system_prompt, session.owner, session.last_seq) == ("", "k1", 1)


async def test_conditional_append_at_a_stale_seq_is_conflict_and_writes_nothing(store: SessionStore) -> None:
    await fill(store, "s1", 2)
    with pytest.raises(Conflict, match="session 's1' is at seq 2, not 1"):
        await store.append("s1", [frame()], TTL, expected_seq=1)
    with pytest.raises(Conflict):
        await store.append("missing", [frame()], TTL, expected_seq=3)
    assert (await store.get("s1")).last_seq == 2
    with pytest.raises(NotFound):
        await store.get("missing")


async def test_conditional_append_at_the_current_seq_succeeds(store: SessionStore) -> None:
    assert [f.seq for f in await store.append("s1", [frame()], TTL, expected_seq=0)] == [1]
    assert [f.seq for f in await store.append("s1", [frame()], TTL, expected_seq=1)] == [2]


async def test_append_past_max_frames_is_limit_exceeded_and_writes_nothing(make_store: MakeStore) -> None:
    store = await make_store(StoreLimits(max_frames=5, max_page_size=10, default_page_size=10))
    await fill(store, "s1", 4)
    with pytest.raises(LimitExceeded, match="limit of 5"):
        await store.append("s1", [frame(), frame()], TTL)
    assert (await store.get("s1")).last_seq == 4
    assert len(await all_frames(store, "s1")) == 4
    assert [f.seq for f in await store.append("s1", [frame()], TTL)] == [5]


async def test_list_frames_oldest_first_pages_forward_from_a_seq(store: SessionStore) -> None:
    await fill(store, "s1", 10)
    page, token = await seqs(store, "s1", 3, False, 4)
    assert page == [3, 4, 5, 6]
    assert await seqs(store, "s1", 3, False, 4, token) == ([7, 8, 9, 10], "")
    assert await seqs(store, "s1", 11, False, 4) == ([], "")


async def test_list_frames_newest_first_pages_backward_from_a_seq(store: SessionStore) -> None:
    await fill(store, "s1", 10)
    page, token = await seqs(store, "s1", 0, True, 4)
    assert page == [10, 9, 8, 7]
    page, token = await seqs(store, "s1", 0, True, 4, token)
    assert page == [6, 5, 4, 3]
    assert await seqs(store, "s1", 0, True, 4, token) == ([2, 1], "")
    assert (await seqs(store, "s1", 5, True, 3))[0] == [5, 4, 3]


async def test_the_latest_frame_is_newest_first_with_page_size_one(store: SessionStore) -> None:
    await fill(store, "s1", 3)
    frames, _ = await store.list_frames("s1", 0, True, 1, "")
    assert [(f.seq, f.content) for f in frames] == [(3, "3")]
    await store.create("empty", "", {}, TTL)
    assert await seqs(store, "empty", 0, True, 1) == ([], "")


async def test_page_size_zero_is_the_default_and_a_large_one_is_capped(store: SessionStore) -> None:
    await fill(store, "s1", 15)
    assert len((await seqs(store, "s1", 0, False, 0))[0]) == 4
    assert len((await seqs(store, "s1", 0, False, 500))[0]) == 10


async def test_a_garbage_page_token_is_invalid_request(store: SessionStore) -> None:
    await fill(store, "s1", 10)
    _, list_token = await store.list_sessions(1, "")
    for token in ("garbage!", "bm90LWEtdG9rZW4", list_token or "x"):
        with pytest.raises(InvalidRequest, match="page_token"):
            await store.list_frames("s1", 0, False, 2, token)
    with pytest.raises(InvalidRequest, match="page_token"):
        await store.list_sessions(1, "garbage!")


async def let_expire(kind: str, clock: FakeClock, store: SessionStore, ttl: float, *session_ids: str) -> None:
    """Advances the fake clock, or (redis: real expiry) polls until each session is gone."""
    if kind != "redis":
        clock.advance(ttl)
        return
    deadline = time.monotonic() + 5.0
    for session_id in session_ids:
        while True:
            try:
                await store.get(session_id)
            except NotFound:
                break
            assert time.monotonic() < deadline, f"session {session_id!r} did not expire"
            await asyncio.sleep(0.05)


async def test_a_session_expires_ttl_after_its_last_write(kind: str, store: SessionStore, clock: FakeClock):
    await store.create("created", "", {}, 0.3)
    await store.append("appended", [frame()], 0.3)
    await store.create("kept", "", {}, TTL)
    await let_expire(kind, clock, store, 0.3, "created", "appended")
    for session_id in ("created", "appended"):
        with pytest.raises(NotFound):
            await store.get(session_id)
        with pytest.raises(NotFound):
            await store.list_frames(session_id, 0, False, 0, "")
    assert [r.id for r in (await store.list_sessions(0, ""))[0]] == ["kept"]
    assert [f.seq for f in await store.append("appended", [frame()], TTL)] == [1]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_an_append_renews_the_expiry_by_the_sessions_own_ttl(store: SessionStore, clock: FakeClock) -> None:
    await store.create("s1", "", {}, 60)
    clock.advance(50)
    await store.append("s1", [frame()], TTL)
    clock.advance(50)
    assert (await store.get("s1")).last_seq == 1
    clock.advance(61)
    with pytest.raises(NotFound):
        await store.get("s1")


@pytest.mark.parametrize("created_by", ["create", "append"])
async def test_appends_keep_the_ttl_the_session_was_created_with(
    kind: str, store: SessionStore, clock: FakeClock, created_by: str
) -> None:
    if created_by == "create":
        await store.create("s1", "", {}, 0.3)
    else:
        await store.append("s1", [frame()], 0.3)
    await store.append("s1", [frame()], TTL)
    assert (await store.get("s1")).expire_time == clock() + 0.3
    await let_expire(kind, clock, store, 0.3, "s1")
    with pytest.raises(NotFound):
        await store.get("s1")


async def test_a_session_created_with_ttl_zero_never_expires(store: SessionStore, clock: FakeClock) -> None:
    await store.create("s1", "", {}, 0)
    await store.append("s1", [frame()], TTL)
    clock.advance(10 * 365 * 86400.0)
    assert (await store.get("s1")).expire_time == 0.0


async def test_watch_replays_from_a_seq_then_follows_new_appends(store: SessionStore) -> None:
    await fill(store, "s1", 3)
    watch = store.watch("s1", 1)
    async with asyncio.timeout(5):
        assert [(await anext(watch)).seq for _ in range(2)] == [2, 3]
        pending = asyncio.create_task(next_of(watch))
        await store.append("s1", [frame("live")], TTL)
        assert ((await pending).seq, (await pending).content) == (4, "live")
    await watch.aclose()


async def test_watch_of_a_missing_session_is_not_found(store: SessionStore) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        await anext(store.watch("nope", 0))


async def test_watch_ends_with_not_found_when_the_session_is_deleted(store: SessionStore) -> None:
    await fill(store, "s1", 1)
    watch = store.watch("s1", 0)
    async with asyncio.timeout(5):
        assert (await anext(watch)).seq == 1
        pending = asyncio.create_task(next_of(watch))
        await store.delete("s1")
        with pytest.raises(NotFound):
            await pending


async def test_a_watcher_joining_during_appends_gets_every_seq_once_in_order(store: SessionStore) -> None:
    halfway = asyncio.Event()

    async def write() -> None:
        for i in range(1, 41):
            await store.append("s1", [frame(str(i))], TTL)
            if i == 10:
                halfway.set()
            await asyncio.sleep(0)

    async def follow() -> list[int]:
        await halfway.wait()
        seen = []
        async for received in store.watch("s1", 0):
            seen.append(received.seq)
            if received.seq == 40:
                return seen
        return seen

    async with asyncio.timeout(10):
        _, seen = await asyncio.gather(write(), follow())
    assert seen == list(range(1, 41))


async def test_50_concurrent_appends_get_seqs_1_to_50(store: SessionStore) -> None:
    results = await asyncio.gather(*(store.append("s1", [frame(str(i))], TTL) for i in range(50)))
    assert sorted(added[0].seq for added in results) == list(range(1, 51))
    stored = await all_frames(store, "s1")
    assert [f.seq for f in stored] == list(range(1, 51))
    assert sorted(f.content for f in stored) == sorted(str(i) for i in range(50))


@SHARED
async def test_two_stores_on_one_backend_see_and_watch_each_others_appends(make_store: MakeStore) -> None:
    writer, reader = await make_store(), await make_store()
    await writer.create("s1", "shared", {}, TTL)
    assert (await reader.get("s1")).system_prompt == "shared"
    watch = reader.watch("s1", 0)
    async with asyncio.timeout(5):
        pending = asyncio.create_task(next_of(watch))
        await asyncio.sleep(0)
        await reader.get("s1")  # queued behind the watcher's first read, so the watcher is now idle
        await writer.append("s1", [frame("from the other process")], TTL)
        assert (await pending).content == "from the other process"
    await watch.aclose()


@SHARED
async def test_concurrent_appends_through_two_stores_are_gap_free(make_store: MakeStore) -> None:
    first, second = await make_store(), await make_store()
    appends = [(first if i % 2 else second).append("s1", [frame(str(i))], TTL) for i in range(50)]
    results = await asyncio.gather(*appends)
    assert sorted(added[0].seq for added in results) == list(range(1, 51))
    assert (await first.get("s1")).last_seq == 50


@pytest.mark.parametrize("kind", ["sqlite"])
async def test_sqlite_keeps_sessions_across_a_restart(make_store: MakeStore) -> None:
    before = await make_store()
    await before.create("s1", "prompt", {"k": "v"}, TTL)
    await fill(before, "s1", 3)
    await before.close()
    after = await make_store()
    assert (await after.get("s1")).last_seq == 3
    assert await seqs(after, "s1", 0, False, 10) == ([1, 2, 3], "")

"""Sessions through the API: SessionService, and Generate carrying history."""

import asyncio

import grpc

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import ask, collect, failure
from tests.fakes import FakeOllama, Hang, HttpError, Reply
from turnout.v1 import common_pb2, generate_pb2, session_pb2

USER, ASSISTANT = common_pb2.ROLE_USER, common_pb2.ROLE_ASSISTANT


def frame(content: str, role=USER, **fields) -> session_pb2.Frame:
    return session_pb2.Frame(role=role, content=content, **fields)


async def frames(c, session_id: str) -> list[session_pb2.Frame]:
    return list((await c.sessions.ListFrames(session_pb2.ListFramesRequest(session_id=session_id))).frames)


async def test_second_turn_carries_the_first_and_the_system_prompt(ollama):
    ollama.script(Reply("Paris."), Reply("About 2 million."))
    async with serve(backends_yaml(ollama)) as c:
        await c.sessions.CreateSession(session_pb2.CreateSessionRequest(session_id="trip", system_prompt="Be brief."))
        first = await collect(c.generate.Generate(ask("Capital of France?", model="llama3.2:1b", session_id="trip")))
        await collect(c.generate.Generate(ask("Population?", model="llama3.2:1b", session_id="trip")))
        stored = await frames(c, "trip")
    assert first[0].started.session_id == "trip"
    assert ollama.requests[-1].json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Population?"},
    ]
    assert [(f.seq, f.role, f.content) for f in stored] == [
        (1, USER, "Capital of France?"), (2, ASSISTANT, "Paris."), (3, USER, "Population?"), (4, ASSISTANT, "About 2 million.")]
    assert (stored[1].backend, stored[1].model) == ("local", "llama3.2:1b")


async def test_generate_on_a_new_session_id_creates_it(ollama):
    async with serve(backends_yaml(ollama)) as c:
        await collect(c.generate.Generate(ask("hi", model="llama3.2:1b", session_id="fresh")))
        session = (await c.sessions.GetSession(session_pb2.GetSessionRequest(session_id="fresh"))).session
    assert session.last_seq == 2


async def test_tool_calls_are_recorded_and_sent_back_with_their_results(ollama):
    ollama.script(Reply(tool_calls=(("get_weather", {"city": "Tokyo"}),)), Reply("11 degrees."))
    async with serve(backends_yaml(ollama)) as c:
        first = await collect(c.generate.Generate(ask("Weather in Tokyo?", model="llama3.2:1b", session_id="w")))
        call = next(r.delta.tool_calls[0] for r in first if r.WhichOneof("event") == "delta" and r.delta.tool_calls)
        result = generate_pb2.Message(role=common_pb2.ROLE_TOOL, content="11", tool_call_id=call.id, tool_name="get_weather")
        await collect(c.generate.Generate(generate_pb2.GenerateRequest(model="llama3.2:1b", session_id="w", messages=[result])))
    sent = ollama.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Tokyo"}}


async def test_history_is_trimmed_to_max_turns(ollama):
    async with serve(backends_yaml(ollama) + "sessions: {store: memory, max_turns: 2}\n") as c:
        for question in ("one", "two", "three"):
            await collect(c.generate.Generate(ask(question, model="llama3.2:1b", session_id="t")))
    assert [m["content"] for m in ollama.requests[-1].json["messages"]] == ["two", "Hello world", "three"]


async def test_failed_or_cancelled_generate_appends_nothing(ollama):
    ollama.script(HttpError(400, "bad"), Hang("partial"))
    async with serve(backends_yaml(ollama)) as c:
        await c.sessions.AppendFrame(session_pb2.AppendFrameRequest(session_id="s", frame=frame("earlier")))
        await failure(c.generate.Generate(ask("fails", model="llama3.2:1b", session_id="s")))
        call = c.generate.Generate(ask("cancelled", model="llama3.2:1b", session_id="s"))
        await ollama.hung.wait()
        call.cancel()
        await ollama.disconnected.wait()
        assert [f.content for f in await frames(c, "s")] == ["earlier"]


async def test_session_history_survives_a_restart_on_sqlite(tmp_path):
    yaml_text = None
    async with FakeOllama() as ollama:
        yaml_text = backends_yaml(ollama) + f"sessions: {{store: sqlite, path: '{tmp_path}/s.db'}}\n"
        async with serve(yaml_text) as c:
            await collect(c.generate.Generate(ask("remember 42", model="llama3.2:1b", session_id="r")))
        async with serve(yaml_text) as c:
            await collect(c.generate.Generate(ask("what number?", model="llama3.2:1b", session_id="r")))
        assert [m["content"] for m in ollama.requests[-1].json["messages"]] == ["remember 42", "Hello world", "what number?"]


async def test_session_service_crud_paging_and_conditional_append(ollama):
    async with serve(backends_yaml(ollama)) as c:
        s = c.sessions
        created = (await s.CreateSession(session_pb2.CreateSessionRequest(metadata={"team": "a"}))).session
        assert len(created.id) == 32 and created.expire_time.seconds > created.create_time.seconds
        for content in ("a", "b", "c"):
            await s.AppendFrame(session_pb2.AppendFrameRequest(session_id=created.id, frame=frame(content, state="x")))
        conflict = await failure(s.AppendFrame(session_pb2.AppendFrameRequest(
            session_id=created.id, frame=frame("d"), expected_seq=2)))
        ok = await s.AppendFrame(session_pb2.AppendFrameRequest(session_id=created.id, frame=frame("d"), expected_seq=3))
        latest = await s.ListFrames(session_pb2.ListFramesRequest(
            session_id=created.id, order=session_pb2.ORDER_NEWEST_FIRST, page_size=1))
        page = await s.ListFrames(session_pb2.ListFramesRequest(session_id=created.id, page_size=2))
        rest = await s.ListFrames(session_pb2.ListFramesRequest(
            session_id=created.id, page_size=2, page_token=page.next_page_token))
        listed = await s.ListSessions(session_pb2.ListSessionsRequest())
        await s.DeleteSession(session_pb2.DeleteSessionRequest(session_id=created.id))
        gone = await failure(s.GetSession(session_pb2.GetSessionRequest(session_id=created.id)))
        taken = await s.CreateSession(session_pb2.CreateSessionRequest(session_id="mine"))
        again = await failure(s.CreateSession(session_pb2.CreateSessionRequest(session_id="mine")))
    assert conflict.code() == grpc.StatusCode.ABORTED and ok.frame.seq == 4
    assert [f.content for f in latest.frames] == ["d"]
    assert [f.content for f in page.frames] == ["a", "b"] and [f.content for f in rest.frames] == ["c", "d"]
    assert rest.next_page_token == ""
    assert [x.id for x in listed.sessions] == [created.id]
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    assert taken.session.id == "mine" and again.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_bad_session_requests_name_the_field(ollama):
    async with serve(backends_yaml(ollama)) as c:
        bad_id = await failure(c.sessions.GetSession(session_pb2.GetSessionRequest(session_id="no spaces")))
        no_role = await failure(c.sessions.AppendFrame(session_pb2.AppendFrameRequest(session_id="s", frame=frame("x", role=0))))
        bad_args = await failure(c.sessions.AppendFrame(session_pb2.AppendFrameRequest(
            session_id="s", frame=frame("x", role=ASSISTANT, tool_calls=[common_pb2.ToolCall(name="f", arguments="[]")]))))
        await c.sessions.AppendFrame(session_pb2.AppendFrameRequest(session_id="s", frame=frame("x")))
        bad_token = await failure(c.sessions.ListFrames(session_pb2.ListFramesRequest(session_id="s", page_token="%%%")))
        in_generate = await failure(c.generate.Generate(ask(model="llama3.2:1b", session_id="no spaces")))
    assert all(e.code() == grpc.StatusCode.INVALID_ARGUMENT for e in (bad_id, no_role, bad_args, bad_token, in_generate))
    assert no_role.details().startswith("frame.role") and bad_args.details().startswith("frame.tool_calls[0].arguments")


async def test_watch_replays_then_follows_new_frames(ollama):
    async with serve(backends_yaml(ollama)) as c:
        for content in ("a", "b"):
            await c.sessions.AppendFrame(session_pb2.AppendFrameRequest(session_id="w", frame=frame(content)))
        watch = c.sessions.WatchSession(session_pb2.WatchSessionRequest(session_id="w", after_seq=1))
        assert (await watch.read()).frame.content == "b"
        next_frame = asyncio.create_task(watch.read())
        await collect(c.generate.Generate(ask("hi", model="llama3.2:1b", session_id="w")))
        assert [(await next_frame).frame.content, (await watch.read()).frame.content] == ["hi", "Hello world"]
        watch.cancel()


async def test_session_affinity_keeps_a_session_on_one_target():
    async with FakeOllama(models=["m"]) as a, FakeOllama(models=["m"]) as b:
        yaml = (f"backends:\n  - {{name: a, kind: ollama, url: '{a.url}'}}\n  - {{name: b, kind: ollama, url: '{b.url}'}}\n"
                "routes:\n  - {name: r, strategy: weighted_round_robin, affinity: session, "
                "targets: [{backend: a, model: m}, {backend: b, model: m}]}\n")
        async with serve(yaml) as c:
            pinned = [(await collect(c.generate.Generate(ask(model="r", session_id="s1"))))[0].started.backend
                      for _ in range(4)]
            spread = [(await collect(c.generate.Generate(ask(model="r"))))[0].started.backend for _ in range(4)]
    assert len(set(pinned)) == 1
    assert sorted(spread) == ["a", "a", "b", "b"]

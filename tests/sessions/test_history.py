"""History trimming and token estimates: pure functions, one intent per test."""

from __future__ import annotations

from gateway.domain import Message, Role, ToolCall
from gateway.sessions.history import estimate_tokens, frames_to_messages, message_tokens, trim
from gateway.sessions.store import FrameRecord

CALL = ToolCall(id="c1", name="get_weather", arguments='{"city":"Oslo"}')


def user(text: str) -> Message:
    return Message(role=Role.USER, content=text)


def assistant(text: str, *calls: ToolCall) -> Message:
    return Message(role=Role.ASSISTANT, content=text, tool_calls=calls)


def tool(text: str) -> Message:
    return Message(role=Role.TOOL, content=text, tool_call_id=CALL.id)


def contents(messages: list[Message]) -> list[str]:
    return [m.content for m in messages]


def test_estimate_is_utf8_bytes_over_four_rounded_up() -> None:
    assert [estimate_tokens(t) for t in ("", "abcd", "abcde", "é", "日本語")] == [0, 1, 2, 1, 3]


def test_a_message_costs_its_text_its_tool_calls_and_an_overhead() -> None:
    assert message_tokens(user("abcd")) == 1 + 4
    assert message_tokens(assistant("", CALL)) == estimate_tokens(CALL.name + CALL.arguments) + 4


def test_frames_become_messages_and_tool_results_get_their_tool_name() -> None:
    frames = [
        FrameRecord(seq=1, create_time=0, role=Role.ASSISTANT, tool_calls=(CALL,)),
        FrameRecord(seq=2, create_time=0, role=Role.TOOL, content="12°C", tool_call_id="c1"),
    ]
    assert frames_to_messages(frames) == [
        assistant("", CALL), Message(role=Role.TOOL, content="12°C", tool_call_id="c1", tool_name="get_weather")
    ]


def test_max_turns_keeps_the_newest_whole_turns() -> None:
    history = [user("u1"), assistant("a1"), user("u2"), assistant("a2"), user("u3")]
    assert contents(trim("", history, 2, None)) == ["u2", "a2", "u3"]


def test_max_turns_below_one_means_no_limit() -> None:
    history = [user("u1"), assistant("a1"), user("u2")]
    assert contents(trim("", history, 0, None)) == ["u1", "a1", "u2"]


def test_a_tool_call_and_its_results_are_kept_or_dropped_together() -> None:
    history = [user("u1"), assistant("", CALL), tool("12°C"), assistant("mild"), user("u2")]
    assert contents(trim("", history, 2, None)) == ["u1", "", "12°C", "mild", "u2"]
    assert contents(trim("", history, 1, None)) == ["u2"]


def test_messages_before_the_first_user_message_form_their_own_turn() -> None:
    history = [assistant("greeting"), user("u1"), assistant("a1")]
    assert contents(trim("", history, 1, None)) == ["u1", "a1"]
    assert contents(trim("", history, 2, None)) == ["greeting", "u1", "a1"]


def test_the_budget_drops_the_oldest_turns_first() -> None:
    history = [user("x" * 40), assistant("y" * 40), user("u2"), assistant("a2"), user("u3")]
    newest_two = sum(message_tokens(m) for m in history[2:])
    assert contents(trim("", history, 10, newest_two)) == ["u2", "a2", "u3"]
    assert contents(trim("", history, 10, newest_two + 100)) == contents(history)


def test_the_system_prompt_is_always_kept_and_counted() -> None:
    history = [user("u1"), user("u2")]
    kept = trim("be brief", history, 10, message_tokens(user("u2")))
    assert kept == [Message(role=Role.SYSTEM, content="be brief"), user("u2")]


def test_the_newest_turn_is_kept_even_when_it_alone_is_over_budget() -> None:
    history = [user("u1"), user("z" * 400)]
    assert contents(trim("prompt", history, 10, 1)) == ["prompt", "z" * 400]


def test_system_messages_in_the_history_give_way_to_the_session_prompt() -> None:
    history = [Message(role=Role.SYSTEM, content="old"), user("u1")]
    assert contents(trim("new", history, 10, None)) == ["new", "u1"]
    assert contents(trim("", history, 10, None)) == ["old", "u1"]

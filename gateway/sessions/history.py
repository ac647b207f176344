"""A session's frames as the messages of a request, trimmed to whole turns
that fit the configured turn limit and token budget. Pure functions, no I/O.

A turn starts at a USER message and runs to the next one, so an assistant
message with tool calls and the TOOL results that answer it always stay or go
together. Messages before the first USER message form a leading turn of their own.
"""

from __future__ import annotations

from typing import Sequence

from gateway.domain import Message, Role
from gateway.sessions.store import FrameRecord

MESSAGE_OVERHEAD = 4
"""Tokens a chat template adds around each message (role markers, separators)."""


def estimate_tokens(text: str) -> int:
    """ceil(UTF-8 bytes / 4): OpenAI's rule of thumb that a token is about four
    bytes of English text. It over-counts English slightly and under-counts
    CJK text (often a token or more per character); it only sizes the history
    to keep, and the backend's own count is the real one."""
    return -(-len(text.encode("utf-8")) // 4)


def message_tokens(message: Message) -> int:
    """The estimate for one message: its text, tool calls and MESSAGE_OVERHEAD."""
    texts = [message.content, message.reasoning, message.tool_call_id]
    texts += [call.name + call.arguments for call in message.tool_calls]
    return MESSAGE_OVERHEAD + sum(estimate_tokens(text) for text in texts)


def frames_to_messages(frames: Sequence[FrameRecord]) -> list[Message]:
    """Frames as messages, in order. A TOOL message gets the name of the tool
    whose call (by tool_call_id) an earlier frame made, when there is one."""
    tool_names: dict[str, str] = {}
    messages = []
    for frame in frames:
        tool_names.update((call.id, call.name) for call in frame.tool_calls)
        tool_name = tool_names.get(frame.tool_call_id, "") if frame.role is Role.TOOL else ""
        messages.append(
            Message(
                role=frame.role, content=frame.content, tool_calls=frame.tool_calls,
                tool_call_id=frame.tool_call_id, tool_name=tool_name, reasoning=frame.reasoning,
            )
        )
    return messages


def split_turns(history: Sequence[Message]) -> list[list[Message]]:
    turns: list[list[Message]] = []
    for message in history:
        if message.role is Role.USER or not turns:
            turns.append([])
        turns[-1].append(message)
    return turns


def trim(
    system_prompt: str, history: Sequence[Message], max_turns: int, token_budget: int | None
) -> list[Message]:
    """The system prompt (a SYSTEM message, when not empty) and the newest whole
    turns of `history`: at most `max_turns` of them (no limit when < 1), then
    fewer, oldest dropped first, while the estimate passes `token_budget` (no
    budget when None). The system prompt is always kept, and so is the newest
    turn even when it alone is over budget: it holds the request being sent.
    SYSTEM messages in `history` are dropped when a system prompt is given."""
    if system_prompt:
        history = [message for message in history if message.role is not Role.SYSTEM]
    turns = split_turns(history)
    if max_turns > 0:
        turns = turns[-max_turns:]
    system = [Message(role=Role.SYSTEM, content=system_prompt)] if system_prompt else []
    if token_budget is not None:
        sizes = [sum(message_tokens(m) for m in turn) for turn in turns]
        total = sum(message_tokens(m) for m in system) + sum(sizes)
        dropped = 0
        while len(turns) - dropped > 1 and total > token_budget:
            total -= sizes[dropped]
            dropped += 1
        turns = turns[dropped:]
    return system + [message for turn in turns for message in turn]

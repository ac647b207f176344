"""Generate's view of a session: the context to send upstream, and the turn to
record once the answer is complete.

A request that names a session sends its system prompt and history (trimmed
by gateway.sessions.history: at most `max_turns` whole turns, then at most
`max_tokens` estimated tokens, oldest first, the system prompt always kept)
followed by the request's own messages. With API keys, a session belongs to
the key that created it; to any other key it does not exist. When the generation completes, the
request's messages and the assistant's answer are appended in one atomic
store call; a cancelled or failed generation appends nothing, so a retry is
clean. Images are sent upstream but not stored in the session.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auth import owner
from gateway.config import SessionsConfig
from gateway.domain import Message, Role, ToolCall
from gateway.errors import NotFound
from gateway.sessions.history import frames_to_messages, trim
from gateway.sessions.store import FrameRecord, NewFrame, SessionStore


@dataclass(frozen=True, slots=True)
class Answer:
    content: str
    tool_calls: tuple[ToolCall, ...]
    backend: str
    model: str
    reasoning: str = ""


FIRST_PAGE = 8
"""Frames in the first page read for a context; each next page is twice the last."""


class Conversations:
    def __init__(self, store: SessionStore, config: SessionsConfig) -> None:
        self._store = store
        self._config = config

    async def context(self, session_id: str, new: tuple[Message, ...]) -> tuple[Message, ...]:
        """System prompt + trimmed history + `new`; just `new` for a session
        that does not exist yet (the first completed turn creates it)."""
        try:
            session = await self._store.get(session_id)
        except NotFound:
            return new
        if session.owner != owner():
            raise NotFound(f"session {session_id!r} does not exist or has expired")
        return tuple(await self._trimmed(session_id, session.system_prompt, new))

    async def _trimmed(self, session_id: str, system_prompt: str, new: tuple[Message, ...]) -> list[Message]:
        """trim() of the whole history + `new`, reading frames newest first in
        pages that double from FIRST_PAGE, and stopping once the frames read
        start a turn and trim already drops some of them: it would drop every
        older turn too."""
        newest_first: list[FrameRecord] = []
        token, size = "", FIRST_PAGE
        while True:
            page, token = await self._store.list_frames(session_id, 0, True, size, token)
            newest_first.extend(page)
            size *= 2
            history = frames_to_messages(newest_first[::-1])
            kept = trim(system_prompt, [*history, *new], self._config.max_turns, self._config.max_tokens)
            if not token:
                return kept
            whole_turns = bool(history) and history[0].role is Role.USER
            offered = [m for m in history if not (system_prompt and m.role is Role.SYSTEM)]
            if whole_turns and len(kept) - bool(system_prompt) < len(offered) + len(new):
                return kept

    async def record(self, session_id: str, new: tuple[Message, ...], answer: Answer) -> None:
        frames = [
            NewFrame(
                role=m.role, content=m.content, tool_calls=m.tool_calls, tool_call_id=m.tool_call_id,
                reasoning=m.reasoning,
            )
            for m in new
        ]
        frames.append(
            NewFrame(
                role=Role.ASSISTANT, content=answer.content, tool_calls=answer.tool_calls,
                state="completed", backend=answer.backend, model=answer.model, reasoning=answer.reasoning,
            )
        )
        await self._store.append(session_id, frames, ttl_if_created=self._config.ttl, owner=owner())

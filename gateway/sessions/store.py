"""The session store protocol and its records.

A session is a header plus an ordered list of frames. Seqs are assigned by the
store: 1, 2, 3, ... per session, with no gaps, also under concurrent appends
from several gateway processes (for the stores that are shared). Times are
unix seconds (float). Every implementation passes tests/sessions/test_contract.py.

Errors (gateway.errors): NotFound for a missing or expired session,
AlreadyExists for a taken caller-chosen id, Conflict when `expected_seq` does
not match, LimitExceeded when an append would pass `max_frames` (nothing is
written then), InvalidRequest for a bad page token, StoreUnavailable when the
backing store cannot be reached or stays busy (its message names the store
but never a credential).

Each session keeps the ttl it was created with (seconds; <= 0 means it never
expires): every append renews its expiry to now + that ttl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Mapping, Protocol, Sequence

from gateway.domain import Role, ToolCall


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    system_prompt: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    create_time: float = 0.0
    update_time: float = 0.0
    expire_time: float = 0.0
    last_seq: int = 0
    owner: str = ""


@dataclass(frozen=True, slots=True)
class NewFrame:
    """A frame to append; the store assigns seq and create_time."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    state: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    backend: str = ""
    model: str = ""
    reasoning: str = ""


@dataclass(frozen=True, slots=True)
class FrameRecord:
    seq: int
    create_time: float
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    state: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    backend: str = ""
    model: str = ""
    reasoning: str = ""


@dataclass(frozen=True, slots=True)
class StoreLimits:
    max_frames: int = 10_000
    max_page_size: int = 1_000
    default_page_size: int = 100


class SessionStore(Protocol):
    async def create(
        self, session_id: str, system_prompt: str, metadata: Mapping[str, str], ttl: float, owner: str = ""
    ) -> SessionRecord:
        """Creates a session; an empty id makes the store choose a random one."""
        ...

    async def get(self, session_id: str) -> SessionRecord: ...

    async def delete(self, session_id: str) -> None: ...

    async def list_sessions(self, page_size: int, page_token: str, owner: str = "") -> tuple[list[SessionRecord], str]:
        """A page of sessions (of that owner when given), most recently updated
        first, and the token of the next page ("" on the last)."""
        ...

    async def append(
        self, session_id: str, frames: Sequence[NewFrame], ttl_if_created: float,
        expected_seq: int | None = None, owner: str = "",
    ) -> list[FrameRecord]:
        """Appends all `frames` atomically (all or none), creating the session
        with `ttl_if_created` (and `owner`) when it does not exist, and renews
        its expiry to now + the session's own ttl."""
        ...

    async def list_frames(
        self, session_id: str, from_seq: int, newest_first: bool, page_size: int, page_token: str
    ) -> tuple[list[FrameRecord], str]: ...

    def watch(self, session_id: str, after_seq: int) -> AsyncIterator[FrameRecord]:
        """Frames with seq > after_seq in order, then each new one as it is
        appended (by this process or another sharing the store), with no gaps
        or duplicates, until the consumer stops iterating."""
        ...

    async def close(self) -> None: ...

"""A session store in this process's memory, for tests and single-process use.

Every method runs without awaiting anything, so each one is atomic on the
event loop. Expired sessions are dropped when they are next looked at.
Watchers wait on a per-session asyncio.Event that is set (and replaced) on
every append and on delete; a watcher of a session that expires untouched
learns it (NotFound) when the session is next written, listed or deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Mapping, Sequence

from gateway.errors import AlreadyExists
from gateway.sessions import codec
from gateway.sessions.store import FrameRecord, NewFrame, SessionRecord, StoreLimits


@dataclass(slots=True)
class _Session:
    record: SessionRecord
    ttl: float
    frames: list[FrameRecord] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def signal(self) -> None:
        """Wakes every watcher waiting on this session."""
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class MemoryStore:
    """Implements gateway.sessions.store.SessionStore; nothing survives the process."""

    def __init__(self, limits: StoreLimits = StoreLimits(), clock: Callable[[], float] = time.time) -> None:
        self._limits = limits
        self._clock = clock
        self._sessions: dict[str, _Session] = {}

    async def create(
        self, session_id: str, system_prompt: str, metadata: Mapping[str, str], ttl: float, owner: str = ""
    ) -> SessionRecord:
        session_id = codec.new_session_id(session_id)
        if self._find(session_id) is not None:
            raise AlreadyExists(f"session {session_id!r} already exists; choose another id or leave it empty")
        return self._create(session_id, system_prompt, metadata, ttl, owner).record

    async def get(self, session_id: str) -> SessionRecord:
        return self._live(session_id).record

    async def delete(self, session_id: str) -> None:
        session = self._live(session_id)
        del self._sessions[session_id]
        session.signal()

    async def list_sessions(self, page_size: int, page_token: str, owner: str = "") -> tuple[list[SessionRecord], str]:
        size = codec.page_size(page_size, self._limits)
        offset = codec.offset_page(page_token)
        for session_id in list(self._sessions):
            self._find(session_id)
        records = sorted(
            (s.record for s in self._sessions.values() if not owner or s.record.owner == owner),
            key=lambda r: (-r.update_time, r.id),
        )
        page = records[offset : offset + size]
        return page, codec.next_offset_token(offset, size, offset + size < len(records))

    async def append(
        self, session_id: str, frames: Sequence[NewFrame], ttl_if_created: float,
        expected_seq: int | None = None, owner: str = "",
    ) -> list[FrameRecord]:
        session = self._find(session_id)
        last_seq = session.record.last_seq if session else 0
        codec.check_append(session_id, last_seq, len(frames), expected_seq, self._limits)
        if session is None:
            session = self._create(session_id, "", {}, ttl_if_created, owner)
        now = self._clock()
        added = [codec.record_frame(last_seq + i, frame, now) for i, frame in enumerate(frames, start=1)]
        session.frames.extend(added)
        session.record = dataclasses.replace(
            session.record, update_time=now, expire_time=codec.expire_time(now, session.ttl),
            last_seq=last_seq + len(added),
        )
        session.signal()
        return added

    async def list_frames(
        self, session_id: str, from_seq: int, newest_first: bool, page_size: int, page_token: str
    ) -> tuple[list[FrameRecord], str]:
        session = self._live(session_id)
        size = codec.page_size(page_size, self._limits)
        window = codec.frame_window(session.record.last_seq, from_seq, newest_first, size, page_token)
        page = session.frames[window.lo - 1 : window.hi]
        return (page[::-1] if newest_first else page), window.next_token

    async def watch(self, session_id: str, after_seq: int) -> AsyncIterator[FrameRecord]:
        session = self._live(session_id)
        last = after_seq
        while True:
            changed = session.changed
            for frame in session.frames[last:]:
                last = frame.seq
                yield frame
            await changed.wait()
            if self._find(session_id) is not session:
                raise codec.not_found(session_id)

    async def close(self) -> None:
        self._sessions.clear()

    def _create(
        self, session_id: str, system_prompt: str, metadata: Mapping[str, str], ttl: float, owner: str
    ) -> _Session:
        now = self._clock()
        record = SessionRecord(
            id=session_id, system_prompt=system_prompt, metadata=dict(metadata), create_time=now,
            update_time=now, expire_time=codec.expire_time(now, ttl), owner=owner,
        )
        session = self._sessions[session_id] = _Session(record, ttl)
        return session

    def _find(self, session_id: str) -> _Session | None:
        """The live session, dropping it first when it has expired."""
        session = self._sessions.get(session_id)
        if session is not None and codec.is_expired(session.record.expire_time, self._clock()):
            del self._sessions[session_id]
            session.signal()
            return None
        return session

    def _live(self, session_id: str) -> _Session:
        session = self._find(session_id)
        if session is None:
            raise codec.not_found(session_id)
        return session

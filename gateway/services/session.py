"""SessionService: proto <-> session records, with validation; the store does
the rest."""

from __future__ import annotations

import re
import uuid
from typing import AsyncIterator, Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.config import LimitsConfig, SessionsConfig
from gateway.domain import Role, ToolCall
from gateway.errors import InvalidRequest, NotFound
from gateway.auth import owner
from gateway.services.convert import ROLES, TO_PB_ROLE, json_object_text, metadata, tool_calls_pb
from gateway.services.status import abort, unary
from gateway.sessions.store import FrameRecord, NewFrame, SessionRecord, SessionStore
from turnout.v1 import session_pb2, session_pb2_grpc

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_TTL = 365 * 86400.0


def session_id(value: str, field: str = "session_id") -> str:
    if not _SESSION_ID.match(value):
        raise InvalidRequest(field, "must be 1-128 characters: letters, digits, '.', '_', ':' or '-', "
                                    "starting with a letter or digit")
    return value


def timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def session_pb(r: SessionRecord) -> session_pb2.Session:
    return session_pb2.Session(
        id=r.id, system_prompt=r.system_prompt, metadata=dict(r.metadata), create_time=timestamp(r.create_time),
        update_time=timestamp(r.update_time), expire_time=timestamp(r.expire_time), last_seq=r.last_seq,
    )


def frame_pb(f: FrameRecord) -> session_pb2.Frame:
    return session_pb2.Frame(
        seq=f.seq, role=TO_PB_ROLE[f.role], content=f.content, tool_calls=tool_calls_pb(f.tool_calls),
        tool_call_id=f.tool_call_id, state=f.state, metadata=dict(f.metadata), create_time=timestamp(f.create_time),
        backend=f.backend, model=f.model, reasoning=f.reasoning,
    )


def new_frame(f: session_pb2.Frame, limits: LimitsConfig) -> NewFrame:
    role = ROLES.get(f.role)
    if role is None:
        raise InvalidRequest("frame.role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL")
    size = len(f.content.encode()) + len(f.reasoning.encode()) + sum(len(c.arguments.encode()) for c in f.tool_calls)
    if size > limits.max_message_bytes:
        raise InvalidRequest("frame", f"is {size} bytes; the limit is {limits.max_message_bytes}")
    calls = []
    for i, call in enumerate(f.tool_calls):
        if not call.name:
            raise InvalidRequest(f"frame.tool_calls[{i}].name", "is required")
        arguments = json_object_text(call.arguments, f"frame.tool_calls[{i}].arguments")
        calls.append(ToolCall(call.id, call.name, arguments))
    if f.reasoning and role is not Role.ASSISTANT:
        raise InvalidRequest("frame.reasoning", "only assistant frames may carry reasoning")
    if len(f.state) > 128:
        raise InvalidRequest("frame.state", "is longer than 128 characters")
    return NewFrame(
        role=role, content=f.content, tool_calls=tuple(calls), tool_call_id=f.tool_call_id, state=f.state,
        metadata=metadata(f.metadata, "frame.metadata", limits), reasoning=f.reasoning,
    )


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    def __init__(self, store: SessionStore, sessions: SessionsConfig, limits: Callable[[], LimitsConfig]) -> None:
        self._store = store
        self._config = sessions
        self._current_limits = limits

    @property
    def _limits(self) -> LimitsConfig:
        """The limits in force now (a config reload may change them)."""
        return self._current_limits()

    @unary
    async def CreateSession(self, request, context) -> session_pb2.CreateSessionResponse:
        if request.session_id:
            session_id(request.session_id)
        ttl = self._config.ttl
        if request.HasField("ttl"):
            ttl = request.ttl.ToNanoseconds() / 1e9
            if not 0 < ttl <= MAX_TTL:
                raise InvalidRequest("ttl", "must be greater than 0 and at most 365 days")
        if len(request.system_prompt.encode()) > self._limits.max_message_bytes:
            raise InvalidRequest("system_prompt", f"is over {self._limits.max_message_bytes} bytes")
        record = await self._store.create(
            request.session_id, request.system_prompt, metadata(request.metadata, "metadata", self._limits), ttl,
            owner=owner(),
        )
        return session_pb2.CreateSessionResponse(session=session_pb(record))

    async def _owned(self, value: str, must_exist: bool = True) -> str:
        """The validated session id, once the session is known to belong to
        the caller's key; another key's session is NotFound, as if absent."""
        sid = session_id(value)
        try:
            record = await self._store.get(sid)
        except NotFound:
            if must_exist:
                raise
            return sid
        if record.owner != owner():
            raise NotFound(f"session {sid!r} does not exist or has expired")
        return sid

    @unary
    async def GetSession(self, request, context) -> session_pb2.GetSessionResponse:
        sid = await self._owned(request.session_id)
        return session_pb2.GetSessionResponse(session=session_pb(await self._store.get(sid)))

    @unary
    async def DeleteSession(self, request, context) -> session_pb2.DeleteSessionResponse:
        await self._store.delete(await self._owned(request.session_id))
        return session_pb2.DeleteSessionResponse()

    @unary
    async def ListSessions(self, request, context) -> session_pb2.ListSessionsResponse:
        records, token = await self._store.list_sessions(request.page_size, request.page_token, owner=owner())
        return session_pb2.ListSessionsResponse(sessions=[session_pb(r) for r in records], next_page_token=token)

    @unary
    async def AppendFrame(self, request, context) -> session_pb2.AppendFrameResponse:
        sid = await self._owned(request.session_id, must_exist=False)
        if not request.HasField("frame"):
            raise InvalidRequest("frame", "is required")
        frame = new_frame(request.frame, self._limits)
        expected = request.expected_seq if request.HasField("expected_seq") else None
        (stored,) = await self._store.append(
            sid, [frame], ttl_if_created=self._config.ttl, expected_seq=expected, owner=owner()
        )
        return session_pb2.AppendFrameResponse(frame=frame_pb(stored))

    @unary
    async def ListFrames(self, request, context) -> session_pb2.ListFramesResponse:
        frames, token = await self._store.list_frames(
            await self._owned(request.session_id), request.from_seq, request.order == session_pb2.ORDER_NEWEST_FIRST,
            request.page_size, request.page_token,
        )
        return session_pb2.ListFramesResponse(frames=[frame_pb(f) for f in frames], next_page_token=token)

    async def WatchSession(self, request, context: grpc.aio.ServicerContext) -> AsyncIterator[session_pb2.WatchSessionResponse]:
        try:
            frames = self._store.watch(await self._owned(request.session_id), request.after_seq)
            async for frame in frames:
                yield session_pb2.WatchSessionResponse(frame=frame_pb(frame))
        except Exception as exc:
            await abort(context, exc, uuid.uuid4().hex)

"""Pure helpers the three stores share: page tokens and windows, frame JSON,
session ids and expiry times. No I/O.

Page tokens are opaque to callers: urlsafe base64 of "<kind>:<number>", where
the number is the next seq (frame pages) or the next offset (session pages).
A token of the wrong kind or that does not decode is an InvalidRequest.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from typing import Mapping

from gateway.domain import Role, ToolCall
from gateway.errors import Conflict, InvalidRequest, LimitExceeded, NotFound
from gateway.sessions.store import FrameRecord, NewFrame, StoreLimits

SEQ = "seq"
OFFSET = "offset"


def encode_token(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_token(kind: str, token: str) -> int | None:
    """The number in `token`, or None for "" (the first page)."""
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        token_kind, _, number = text.partition(":")
        value = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = -1
        token_kind = ""
    if token_kind != kind or value < 0:
        raise InvalidRequest("page_token", "not a token this listing returned; pass the next_page_token as given")
    return value


def page_size(requested: int, limits: StoreLimits) -> int:
    """0 means the default size; larger than the maximum is capped."""
    if requested < 0:
        raise InvalidRequest("page_size", f"must be 0 (the default, {limits.default_page_size}) or more")
    return min(requested or limits.default_page_size, limits.max_page_size)


@dataclass(frozen=True, slots=True)
class FrameWindow:
    """The seqs of one page of frames, lo..hi inclusive (empty when lo > hi)."""

    lo: int
    hi: int
    next_token: str


def frame_window(
    last_seq: int, from_seq: int, newest_first: bool, size: int, page_token: str
) -> FrameWindow:
    """Which seqs a ListFrames page holds, given that a session's frames are
    exactly 1..last_seq. Oldest first: seq >= from_seq (0 = from the start).
    Newest first: seq <= from_seq (0 = from the latest). A token overrides from_seq."""
    if from_seq < 0:
        raise InvalidRequest("from_seq", "must be 0 or a frame seq")
    start = decode_token(SEQ, page_token)
    if start is None:
        start = from_seq
    start = min(start, last_seq + 1)  # past the end is empty; stores never see seqs beyond their integers
    if newest_first:
        hi = min(start or last_seq, last_seq)
        lo = max(hi - size + 1, 1)
        return FrameWindow(lo, hi, encode_token(SEQ, lo - 1) if lo > 1 else "")
    lo = max(start, 1)
    hi = min(lo + size - 1, last_seq)
    return FrameWindow(lo, hi, encode_token(SEQ, hi + 1) if hi < last_seq else "")


def offset_page(page_token: str) -> int:
    """The offset a ListSessions page starts at."""
    return decode_token(OFFSET, page_token) or 0


def next_offset_token(offset: int, size: int, has_more: bool) -> str:
    return encode_token(OFFSET, offset + size) if has_more else ""


def frame_to_json(frame: NewFrame, create_time: float) -> str:
    """A frame without its seq (the store keeps seq beside it)."""
    return json.dumps(
        {
            "create_time": create_time,
            "role": frame.role.value,
            "content": frame.content,
            "tool_calls": [[c.id, c.name, c.arguments] for c in frame.tool_calls],
            "tool_call_id": frame.tool_call_id,
            "state": frame.state,
            "metadata": dict(frame.metadata),
            "backend": frame.backend,
            "model": frame.model,
            "reasoning": frame.reasoning,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def frame_from_json(seq: int, text: str) -> FrameRecord:
    data = json.loads(text)
    return FrameRecord(
        seq=seq,
        create_time=data["create_time"],
        role=Role(data["role"]),
        content=data["content"],
        tool_calls=tuple(ToolCall(id=i, name=n, arguments=a) for i, n, a in data["tool_calls"]),
        tool_call_id=data["tool_call_id"],
        state=data["state"],
        metadata=data["metadata"],
        backend=data["backend"],
        model=data["model"],
        reasoning=data.get("reasoning", ""),
    )


def record_frame(seq: int, frame: NewFrame, create_time: float) -> FrameRecord:
    return FrameRecord(
        seq=seq,
        create_time=create_time,
        role=frame.role,
        content=frame.content,
        tool_calls=tuple(frame.tool_calls),
        tool_call_id=frame.tool_call_id,
        state=frame.state,
        metadata=dict(frame.metadata),
        backend=frame.backend,
        model=frame.model,
        reasoning=frame.reasoning,
    )


def metadata_to_json(metadata: Mapping[str, str]) -> str:
    return json.dumps(dict(metadata), separators=(",", ":"), ensure_ascii=False)


def new_session_id(requested: str) -> str:
    return requested or uuid.uuid4().hex


def expire_time(now: float, ttl: float) -> float:
    """now + ttl; 0.0 (never) when ttl <= 0."""
    return now + ttl if ttl > 0 else 0.0


def is_expired(expire_at: float, now: float) -> bool:
    return 0.0 < expire_at <= now


def not_found(session_id: str) -> NotFound:
    return NotFound(f"session {session_id!r} does not exist or has expired")


def check_append(session_id: str, last_seq: int, count: int, expected_seq: int | None, limits: StoreLimits) -> None:
    """Raises Conflict or LimitExceeded for an append of `count` frames."""
    if expected_seq is not None and expected_seq != last_seq:
        raise Conflict(f"session {session_id!r} is at seq {last_seq}, not {expected_seq}")
    if last_seq + count > limits.max_frames:
        raise LimitExceeded(
            f"session {session_id!r} has {last_seq} frames; appending {count} would pass the limit of"
            f" {limits.max_frames}; start a new session"
        )

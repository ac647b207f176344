"""Incremental stream decoders with no I/O: bytes in, parsed items out.

`NDJSONDecoder` yields one JSON value per line (Ollama). `SSEDecoder` yields
server-sent events following the WHATWG event-stream rules (OpenAI). Both take
bytes in arbitrary chunks, so a line, or a UTF-8 character, may be split
across any two `feed` calls. Modelled on httpx's `LineDecoder` and h11.
Neither holds more than MAX_LINE bytes of one unfinished line (NDJSON) or
event (SSE): past it the stream is malformed, so an upstream that never ends
its line cannot fill memory.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Iterator

from gateway.domain import Delta, StreamEvent

from gateway.errors import BackendProtocolError

_SNIPPET = 80
MAX_LINE = 8 << 20  # bytes of one unfinished line or event; real ones are far smaller
_LINE_END = re.compile(rb"\r\n|\r|\n")
_ID_ALPHABET = string.ascii_lowercase + string.digits


class StreamDecodeError(ValueError):
    """The upstream sent bytes that are not the framing it promised."""


@contextlib.contextmanager
def decode_errors(backend: str) -> Iterator[None]:
    """Turns StreamDecodeError into BackendProtocolError naming the backend."""
    try:
        yield
    except StreamDecodeError as exc:
        raise BackendProtocolError(f"backend {backend!r} sent a malformed stream: {exc}") from exc


def new_tool_call_id() -> str:
    """An id for a tool call the backend sent without one: `call_` and 8 chars
    of [a-z0-9], the shape Ollama's own server generates."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def _snippet(line: bytes) -> str:
    text = line[:_SNIPPET].decode("utf-8", "replace")
    return repr(text) + ("..." if len(line) > _SNIPPET else "")


def _bounded(size: int) -> None:
    if size > MAX_LINE:
        raise StreamDecodeError(f"a line or event passed {MAX_LINE} bytes without ending")


def _parse_json_line(line: bytes) -> object:
    try:
        return json.loads(line.decode("utf-8"))
    except ValueError as exc:
        raise StreamDecodeError(f"not a JSON line: {_snippet(line)}") from exc


class NDJSONDecoder:
    """Newline-delimited JSON: every complete line is parsed; blank lines are skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[object]:
        last_newline = data.rfind(b"\n")
        if last_newline < 0:
            self._buffer += data
            _bounded(len(self._buffer))
            return []
        complete = bytes(self._buffer) + data[:last_newline]
        self._buffer = bytearray(data[last_newline + 1 :])
        _bounded(len(self._buffer))
        lines = complete.split(b"\n")
        _bounded(max(map(len, lines)))
        return [_parse_json_line(line) for line in lines if line.strip()]

    def flush(self) -> list[object]:
        """Parses a final line that had no newline after it."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return [_parse_json_line(rest)] if rest.strip() else []


@dataclass(frozen=True, slots=True, kw_only=True)
class SSEEvent:
    event: str = "message"
    data: str
    id: str | None = None


class SSEDecoder:
    """Server-sent events per the WHATWG "event stream interpretation" rules.

    Lines end in CRLF, LF or CR; a CR ending one feed and an LF starting the
    next are one line end. Comment lines start with ":". An event is
    dispatched at a blank line, and only if it has at least one `data` line.
    `id` persists across events, as the last-event-id buffer does.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._skip_lf = False
        self._first_line = True
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""
        self._last_id: str | None = None

    def feed(self, data: bytes) -> list[SSEEvent]:
        if not data:
            return []
        if self._skip_lf and data.startswith(b"\n"):
            data = data[1:]
        self._skip_lf = False
        if b"\n" not in data and b"\r" not in data:
            self._pending += data
            _bounded(self._data_size + len(self._pending))
            return []
        buffer = bytes(self._pending) + data
        events: list[SSEEvent] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            if match.group() == b"\r" and match.end() == len(buffer):
                self._skip_lf = True
            _bounded(self._data_size + match.start() - start)
            event = self._line(buffer[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._pending = bytearray(buffer[start:])
        _bounded(self._data_size + len(self._pending))
        return events

    def flush(self) -> list[SSEEvent]:
        """Ends the stream. Per the spec an event not closed by a blank line is
        discarded, so this never dispatches; it drops the unfinished event."""
        self._pending, self._skip_lf = bytearray(), False
        self._data, self._data_size, self._event = [], 0, ""
        return []

    def _line(self, raw: bytes) -> SSEEvent | None:
        line = raw.decode("utf-8", "replace")
        if self._first_line:
            self._first_line = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
            self._data_size += len(raw)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event = self._data, self._event
        self._data, self._data_size, self._event = [], 0, ""
        if not data:
            return None
        return SSEEvent(event=event or "message", data="\n".join(data), id=self._last_id)


def count(value: object) -> int | None:
    """A token count as reported: a non-negative JSON integer, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def seconds(value: object, unit: float) -> float | None:
    """A reported duration (a non-negative JSON number of `unit` seconds) in seconds, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return value * unit
    return None


def json_object(value: object) -> dict:
    """`value` if it is a JSON object; StreamDecodeError otherwise."""
    if not isinstance(value, dict):
        raise StreamDecodeError("expected a JSON object")
    return value


def coalesce(events: list[StreamEvent]) -> list[StreamEvent]:
    """Merges consecutive Deltas decoded from one network read into one, so a
    burst of upstream chunks costs one gRPC message. Nothing waits for this:
    the events arrived together."""
    out: list[StreamEvent] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, Delta) and isinstance(last, Delta):
            out[-1] = Delta(
                content=last.content + event.content,
                reasoning=last.reasoning + event.reasoning,
                tool_calls=last.tool_calls + event.tool_calls,
            )
        else:
            out.append(event)
    return out

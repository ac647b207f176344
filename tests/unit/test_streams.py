"""NDJSON and SSE decoders: same events however the bytes are chunked."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.streams import (
    MAX_LINE,
    NDJSONDecoder,
    SSEDecoder,
    SSEEvent,
    StreamDecodeError,
    coalesce,
    new_tool_call_id,
)
from gateway.domain import Delta, Finish, FinishReason, ToolCall

NDJSON = (
    '{"message":{"content":"héllo 東京 🌸"},"done":false}\n'
    "\n"
    '{"message":{"content":""},"done":true,"eval_count":15}\r\n'
    '{"tail":"no newline"}'
).encode()
NDJSON_EXPECTED = [
    {"message": {"content": "héllo 東京 🌸"}, "done": False},
    {"message": {"content": ""}, "done": True, "eval_count": 15},
    {"tail": "no newline"},
]

SSE = (
    "\ufeff: a comment\r\n"
    "data: first 🌸\r\n\r\n"
    "event: update\rdata:no space\rdata:  two spaces\r\r"
    "id: 7\ndata\n\n"
    "retry: 1000\n\n"
    "data: [DONE]\n\n"
    "data: unterminated"
).encode()
SSE_EXPECTED = [
    SSEEvent(data="first 🌸"),
    SSEEvent(event="update", data="no space\n two spaces"),
    SSEEvent(data="", id="7"),
    SSEEvent(data="[DONE]", id="7"),
]


def decode_ndjson(chunks: list[bytes]) -> list[object]:
    decoder = NDJSONDecoder()
    out = [obj for chunk in chunks for obj in decoder.feed(chunk)]
    return out + decoder.flush()


def decode_sse(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    out = [event for chunk in chunks for event in decoder.feed(chunk)]
    return out + decoder.flush()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@pytest.mark.parametrize("offset", range(len(NDJSON) + 1))
def test_ndjson_same_objects_when_split_at_any_offset(offset: int) -> None:
    assert decode_ndjson([NDJSON[:offset], NDJSON[offset:]]) == NDJSON_EXPECTED


@given(st.lists(st.integers(0, len(NDJSON))))
def test_ndjson_same_objects_in_any_chunking(cuts: list[int]) -> None:
    assert decode_ndjson(split_at(NDJSON, cuts)) == NDJSON_EXPECTED


def test_ndjson_byte_at_a_time_splits_multibyte_characters() -> None:
    assert decode_ndjson([bytes([b]) for b in NDJSON]) == NDJSON_EXPECTED


def test_ndjson_objects_are_returned_as_soon_as_their_line_ends() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}\n{"b"') == [{"a": 1}]
    assert decoder.feed(b":2}\n") == [{"b": 2}]


def test_ndjson_garbage_line_raises_with_a_short_snippet() -> None:
    with pytest.raises(StreamDecodeError) as caught:
        NDJSONDecoder().feed(b"<html>" + b"x" * 500 + b"\n")
    assert "<html>" in str(caught.value)
    assert len(str(caught.value)) < 120


def test_ndjson_invalid_utf8_raises() -> None:
    with pytest.raises(StreamDecodeError):
        NDJSONDecoder().feed(b'"\xff"\n')


def test_ndjson_garbage_final_line_raises_at_flush() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b"{not json") == []
    with pytest.raises(StreamDecodeError):
        decoder.flush()


@pytest.mark.parametrize("offset", range(len(SSE) + 1))
def test_sse_same_events_when_split_at_any_offset(offset: int) -> None:
    assert decode_sse([SSE[:offset], SSE[offset:]]) == SSE_EXPECTED


@given(st.lists(st.integers(0, len(SSE))))
def test_sse_same_events_in_any_chunking(cuts: list[int]) -> None:
    assert decode_sse(split_at(SSE, cuts)) == SSE_EXPECTED


def test_sse_byte_at_a_time_splits_crlf_and_multibyte_characters() -> None:
    assert decode_sse([bytes([b]) for b in SSE]) == SSE_EXPECTED


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_sse_each_line_ending_ends_lines(eol: bytes) -> None:
    stream = b"event: e" + eol + b"data: a" + eol + b"data: b" + eol + eol
    assert decode_sse([stream]) == [SSEEvent(event="e", data="a\nb")]


def test_sse_cr_then_lf_in_next_feed_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [SSEEvent(data="a\nb")]


def test_sse_event_dispatches_as_soon_as_its_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [SSEEvent(data="a")]


def test_sse_blank_line_without_data_dispatches_nothing_and_resets_event_type() -> None:
    assert decode_sse([b"event: ping\n\ndata: x\n\n"]) == [SSEEvent(data="x")]


def test_sse_comments_and_unknown_fields_are_ignored() -> None:
    assert decode_sse([b": keepalive\nfoo: bar\ndata: x\n\n"]) == [SSEEvent(data="x")]


def test_sse_only_one_space_after_the_colon_is_stripped() -> None:
    assert decode_sse([b"data:   x \n\n"]) == [SSEEvent(data="  x ")]


def test_sse_id_with_nul_is_ignored() -> None:
    assert decode_sse([b"id: a\x00b\ndata: x\n\n"]) == [SSEEvent(data="x", id=None)]


def test_sse_flush_discards_an_event_without_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\n") == []
    assert decoder.flush() == []


def test_new_tool_call_id_has_ollamas_shape() -> None:
    value = new_tool_call_id()
    assert value.startswith("call_") and len(value) == 13
    assert all(c.isdigit() or "a" <= c <= "z" for c in value[5:])


def test_coalesce_merges_consecutive_deltas_and_keeps_the_finish_apart():
    call = ToolCall("call_1", "f", "{}")
    events = [Delta("a", "r1"), Delta("b", tool_calls=(call,)), Finish(FinishReason.STOP)]
    assert coalesce(events) == [Delta("ab", "r1", (call,)), Finish(FinishReason.STOP)]


def test_coalesce_of_nothing_or_one_event_is_unchanged():
    assert coalesce([]) == [] and coalesce([Delta("x")]) == [Delta("x")]


def refused_after(decoder: NDJSONDecoder | SSEDecoder, first: bytes, piece: bytes) -> int:
    """Bytes fed (`first`, then `piece` again and again) before the decoder
    refused them; fails if it took twice MAX_LINE without refusing."""
    fed = 0
    with pytest.raises(StreamDecodeError, match=f"passed {MAX_LINE} bytes without ending"):
        for chunk in itertools.chain([first], itertools.repeat(piece, 2 * MAX_LINE // len(piece))):
            decoder.feed(chunk)
            fed += len(chunk)
    return fed


@pytest.mark.parametrize("decoder", [NDJSONDecoder, SSEDecoder])
def test_a_line_that_never_ends_is_refused_at_max_line(decoder) -> None:
    assert refused_after(decoder(), b'data: {"a":"', b"x" * 65536) <= MAX_LINE


@pytest.mark.parametrize("decoder", [NDJSONDecoder, SSEDecoder])
def test_a_line_past_max_line_within_one_feed_is_refused(decoder) -> None:
    assert refused_after(decoder(), b"x" * (MAX_LINE + 1) + b"\n\n", b"\n") == 0


def test_sse_an_event_whose_data_lines_never_end_it_is_refused_at_max_line() -> None:
    assert refused_after(SSEDecoder(), b"", b"data: " + b"x" * 1024 + b"\n") <= MAX_LINE * 1031 // 1030


@pytest.mark.parametrize("decoder", [NDJSONDecoder, SSEDecoder])
def test_lines_and_events_just_under_max_line_pass(decoder) -> None:
    body = b"x" * (MAX_LINE - 20)
    line = b'{"a":"' + body + b'"}\n' if decoder is NDJSONDecoder else b"data: " + body + b"\n\n"
    whole = decoder()
    parsed = [item for i in range(0, 2 * len(line), 65536) for item in whole.feed((line * 2)[i : i + 65536])]
    assert len(parsed) == 2

"""Caller-supplied JSON text (tool parameters, tool-call arguments), parsed
strictly: only what every upstream's JSON encoder and decoder accepts gets
through, and anything else is InvalidRequest naming the field. Refused:
syntax errors, NaN/Infinity, numbers that overflow to infinity or have more
digits than Python will convert, lone UTF-16 surrogate escapes (they cannot
be encoded as UTF-8), and nesting deeper than MAX_DEPTH (the upstream body
nests a few levels more, and encoders recurse)."""

from __future__ import annotations

import json
import math

from gateway.errors import InvalidRequest

MAX_DEPTH = 64


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _problem(value: object) -> str | None:
    """What makes a parsed value unsendable, walked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                return f"nests deeper than {MAX_DEPTH} levels"
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, float) and not math.isfinite(item):
            return "has a number out of range"
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode()
            except UnicodeEncodeError:
                return "has a lone UTF-16 surrogate escape (\\ud800-\\udfff); it is not valid Unicode"
    return None


def json_object(text: str, field: str) -> dict[str, object]:
    """`text` parsed as a JSON object; InvalidRequest naming `field` otherwise."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(field, f"is not valid JSON ({exc.msg} at position {exc.pos})") from None
    except RecursionError:
        raise InvalidRequest(field, f"nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidRequest(field, f"is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(value, dict):
        raise InvalidRequest(field, f"must be a JSON object, not {type(value).__name__}")
    problem = _problem(value)
    if problem is not None:
        raise InvalidRequest(field, problem)
    return value

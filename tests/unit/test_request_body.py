"""Upstream request bodies: what cannot be encoded is the caller's
INVALID_ARGUMENT, never an INTERNAL error."""

import pytest

from adapters.http import json_body
from gateway.errors import InvalidRequest


def test_a_body_is_compact_utf8_json():
    assert json_body({"a": "東京", "b": [1, 2.5]}) == '{"a":"東京","b":[1,2.5]}'.encode()


@pytest.mark.parametrize("payload", [{"a": "\ud800"}, {"a": float("nan")}, {"a": float("-inf")}])
def test_an_unencodable_body_is_invalid_argument(payload):
    with pytest.raises(InvalidRequest) as raised:
        json_body(payload)
    assert raised.value.field == "request"


def test_a_body_nested_past_the_encoders_limit_is_invalid_argument():
    deep: dict = {}
    for _ in range(5000):
        deep = {"a": deep}
    with pytest.raises(InvalidRequest):
        json_body(deep)

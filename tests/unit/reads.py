"""Upstream bodies for httpx.MockTransport that arrive as separate network reads."""

from __future__ import annotations

from typing import AsyncIterator, Callable

import httpx


class Reads(httpx.AsyncByteStream):
    def __init__(self, *parts: bytes) -> None:
        self.parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


def in_reads(*parts: bytes, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    """A handler whose response body arrives as these separate reads."""
    return lambda request: httpx.Response(status, stream=Reads(*parts))

"""Request builders and status readers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Iterator

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from turnout.v1 import common_pb2, generate_pb2


def ask(text: str = "hi", model: str = "", **fields) -> generate_pb2.GenerateRequest:
    return generate_pb2.GenerateRequest(
        model=model, messages=[generate_pb2.Message(role=common_pb2.ROLE_USER, content=text)], **fields
    )


async def collect(call) -> list[generate_pb2.GenerateResponse]:
    return [response async for response in call]


def kinds(responses) -> list[str]:
    return [r.WhichOneof("event") for r in responses]


def text(responses) -> str:
    return "".join(r.delta.content for r in responses if r.WhichOneof("event") == "delta")


async def failure(call) -> grpc.aio.AioRpcError:
    """Awaits a unary call, or consumes a streaming one, that must fail, and returns its error."""
    try:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


def details(error: grpc.aio.AioRpcError, kind):
    """The google.rpc detail of that type carried by the error, or None."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            message = kind()
            packed.Unpack(message)
            return message
    return None


BadRequest = error_details_pb2.BadRequest
RetryInfo = error_details_pb2.RetryInfo


class RequestLines(logging.Handler):
    """The gateway's request log lines as they are written. A request writes
    its line after its metrics, and a caller whose own deadline ran out may
    see its status before the gateway has noticed: `await lines.seen(n)`
    before reading the metrics of n requests."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._written = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "request":
            self.records.append(record)
            self._written.set()

    async def seen(self, n: int) -> None:
        async with asyncio.timeout(10):
            while len(self.records) < n:
                self._written.clear()
                await self._written.wait()



@contextlib.contextmanager
def request_lines() -> Iterator[RequestLines]:
    """RequestLines attached to the "turnout.requests" logger while inside."""
    logger, lines = logging.getLogger("turnout.requests"), RequestLines()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(lines)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)

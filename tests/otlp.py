"""A real OTLP trace receiver on loopback, for either protocol the gateway
exports with: HTTP/protobuf (POST /v1/traces, served by aiohttp) or gRPC
(opentelemetry.proto.collector.trace.v1.TraceService/Export). Requests are
decoded with the official opentelemetry-proto messages; the raw bytes are
kept too, to search them for text that must never be exported."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass

import grpc
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

PROTOCOLS = ("http/protobuf", "grpc")


def value(any_value: common_pb2.AnyValue) -> object:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(item) for item in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


@dataclass
class ReceivedSpan:
    span: trace_pb2.Span
    resource: dict[str, object]

    @property
    def attributes(self) -> dict[str, object]:
        return {kv.key: value(kv.value) for kv in self.span.attributes}

    @property
    def events(self) -> list[str]:
        return [event.name for event in self.span.events]

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, protocol: str = "http/protobuf"):
        assert protocol in PROTOCOLS
        self.protocol = protocol
        self.spans: list[ReceivedSpan] = []
        self.raw = bytearray()
        self.headers: list[dict[str, str]] = []
        self._arrived = asyncio.Condition()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> OtlpReceiver:
        if self.protocol == "grpc":
            self._server = grpc.aio.server()
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
            self.port = self._server.add_insecure_port("127.0.0.1:0")
            await self._server.start()
        else:
            app = web.Application()
            app.router.add_post("/v1/traces", self._post)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self.protocol == "grpc":
            await self._server.stop(0)
        else:
            await self._runner.cleanup()

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        await self._receive(body, {k.lower(): v for k, v in request.headers.items()})
        response = trace_service_pb2.ExportTraceServiceResponse()
        return web.Response(body=response.SerializeToString(), content_type="application/x-protobuf")

    async def Export(self, request, context):  # noqa: N802 (the gRPC method name)
        await self._receive(request.SerializeToString(), dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()

    async def _receive(self, body: bytes, headers: dict[str, str]) -> None:
        export = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        async with self._arrived:
            self.raw += body
            self.headers.append(headers)
            for resource_spans in export.resource_spans:
                resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(ReceivedSpan(span, resource) for span in scope_spans.spans)
            self._arrived.notify_all()

    async def wait_for_spans(self, count: int, timeout: float = 30) -> list[ReceivedSpan]:
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.spans) >= count)
        return list(self.spans)

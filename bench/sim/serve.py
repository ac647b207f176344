"""Runs one scenario's simulated engines in their own process (so their
timers never share a CPU-bound event loop with turnout or the load
generator). Prints one JSON line {engine name: base URL} once every engine
listens, then serves until its stdin closes.

    python -m bench.sim.serve SCENARIO
"""

from __future__ import annotations

import asyncio
import json
import sys

from bench.sim.engine import Engine
from bench.sim.scenarios import SCENARIOS
from bench.sim.server import SimServer


async def main(name: str) -> None:
    servers = {e.name: SimServer(e.personality, Engine(e.profile, e.models)) for e in SCENARIOS[name].engines}
    for server in servers.values():
        await server.start()
    print(json.dumps({name: server.url for name, server in servers.items()}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for server in servers.values():
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

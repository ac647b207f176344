"""`workers: 2`: no worker outlives the process that supervises it."""

import asyncio

from tests.e2e.conftest import spawn


async def test_workers_exit_when_their_parent_is_killed(ollama, tmp_path):
    config = f"workers: 2\nsessions: {{store: memory}}\nbackends:\n  - {{name: local, kind: ollama, url: '{ollama.url}'}}\n"
    async with spawn(config, tmp_path) as gateway:
        gateway.process.kill()  # SIGKILL: the parent gets no chance to stop its workers
        assert await asyncio.wait_for(gateway.process.wait(), 20) == -9
        # Every worker shares the parent's stderr: it reaches its end once the last worker has exited.
        await asyncio.wait_for(gateway.process.stderr.read(), 30)

"""`turnout chat` (and `pull`'s progress bar) on a terminal, as a person uses it: a real pseudo-terminal
(the chat is its session leader, so the Ctrl-C byte becomes SIGINT through the
terminal driver), prompts typed, the screen read back."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
from typing import AsyncIterator

import pytest

from tests.e2e.conftest import TURNOUT, backends_yaml, serve
from tests.fakes import Gate

PROMPT = b">>> "


class Terminal:
    """The controlling side of a pty: `type` keys, `expect` text on the screen."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.screen = b""
        self._changed = asyncio.Event()
        os.set_blocking(master, False)
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            self.screen += os.read(self.master, 65536)
        except OSError:  # the child closed its side
            asyncio.get_running_loop().remove_reader(self.master)
        self._changed.set()

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    async def expect(self, text: bytes, after: int = 0, timeout: float = 30) -> int:
        """Waits until `text` shows on the screen past offset `after`; returns the offset just past it."""
        async def seen() -> int:
            while (i := self.screen.find(text, after)) < 0:
                self._changed.clear()
                await self._changed.wait()
            return i + len(text)
        try:
            return await asyncio.wait_for(seen(), timeout)
        except TimeoutError:
            raise AssertionError(f"{text!r} not on the screen after {after}: {self.screen[after:]!r}") from None


@contextlib.asynccontextmanager
async def on_a_terminal(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, Terminal]]:
    """`turnout ARGS...` with a pseudo-terminal as its controlling terminal and standard streams."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    process = await asyncio.create_subprocess_exec(
        "setsid", "--ctty", *TURNOUT, *args, stdin=slave, stdout=slave, stderr=slave,
        env={**os.environ, "TERM": "dumb"},
    )
    os.close(slave)
    terminal = Terminal(master)
    try:
        yield process, terminal
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        asyncio.get_running_loop().remove_reader(master)
        os.close(master)


@pytest.fixture
async def gateway(ollama, tmp_path):
    async with serve(backends_yaml(ollama) + f"sessions: {{path: '{tmp_path}/sessions.db'}}\n") as c:
        yield c


async def test_an_interactive_chat_keeps_the_conversation_in_a_session(gateway, ollama):
    address = f"127.0.0.1:{gateway.gateway.port}"
    async with on_a_terminal("chat", "--gateway", address, "-m", "llama3.2:1b", "-s", "be brief") as (process, term):
        at = await term.expect(PROMPT)
        term.type(b"say hello\n")
        at = await term.expect(b"Hello world", at)
        at = await term.expect(PROMPT, at)
        term.type(b"and again\n")
        at = await term.expect(PROMPT, await term.expect(b"Hello world", at))
        term.type(b"/bye\n")
        assert await asyncio.wait_for(process.wait(), 30) == 0
    # The second turn carried the first from the session, with its system prompt.
    assert ollama.requests[-1].json["messages"] == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello"},
        {"role": "assistant", "content": "Hello world"}, {"role": "user", "content": "and again"}]
    session_id = term.screen.split(b"session ", 1)[1].split(b" ", 1)[0].decode()

    # --session resumes it from a new process.
    async with on_a_terminal("chat", "--gateway", address, "-m", "llama3.2:1b", "--session", session_id) as (process, term):
        term.type(b"third\n")
        await term.expect(b"Hello world")
        await term.expect(PROMPT, await term.expect(b"Hello world"))
        term.type(b"\x04")  # Ctrl-D at the prompt leaves too
        assert await asyncio.wait_for(process.wait(), 30) == 0
    assert [m["content"] for m in ollama.requests[-1].json["messages"]] == [
        "be brief", "say hello", "Hello world", "and again", "Hello world", "third"]


async def test_ctrl_c_stops_the_answer_and_returns_to_the_prompt(gateway, ollama):
    ollama.script(Gate("Hel", "lo"))  # "Hel", "lo", then holds the end of the answer
    address = f"127.0.0.1:{gateway.gateway.port}"
    async with on_a_terminal("chat", "--gateway", address, "-m", "llama3.2:1b") as (process, term):
        term.type(b"tell me a long story\n")
        at = await term.expect(b"Hello")
        term.type(b"\x03")  # Ctrl-C
        at = await term.expect(PROMPT, at)
        assert process.returncode is None
        term.type(b"once more\n")
        at = await term.expect(PROMPT, await term.expect(b"Hello world", at))
        term.type(b"/bye\n")
        assert await asyncio.wait_for(process.wait(), 30) == 0
    # The stopped answer left nothing in the session: the next turn carried only its own prompt.
    assert ollama.requests[-1].json["messages"] == [{"role": "user", "content": "once more"}]


async def test_pull_draws_a_progress_bar_on_a_terminal(gateway, ollama):
    async with on_a_terminal("pull", "qwen2.5:0.5b", "--gateway", f"127.0.0.1:{gateway.gateway.port}") as (process, term):
        at = await term.expect(b"100%")
        await term.expect(b"pulled qwen2.5:0.5b onto local", at)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    assert b"\r" in term.screen and b"pulling manifest" in term.screen

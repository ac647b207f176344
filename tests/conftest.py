"""Fixtures shared by every test folder: a real redis-server of our own."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from typing import Iterator

import pytest

REDIS_INSTALL = "apt-get update -qq && apt-get install -y -qq redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A redis-server of our own on a free loopback port, killed at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"redis-server is not on PATH; the redis store tests need it: {REDIS_INSTALL}", pytrace=False)
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10.0
        while not _answers_ping(port):
            if server.poll() is not None:
                pytest.fail(f"redis-server exited with code {server.returncode} on port {port}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server did not answer PING on port {port} within 10 s", pytrace=False)
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

"""Store outages: a store whose backend cannot be reached or opened raises
StoreUnavailable, naming the store but never a credential."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import AsyncIterator

import pytest
import redis.exceptions

from gateway.domain import Role
from gateway.errors import StoreUnavailable
from gateway.sessions.redis import RedisStore
from gateway.sessions.sqlite import SqliteStore
from gateway.sessions.store import NewFrame

CALLS = {
    "create": lambda store: store.create("s1", "", {}, 60),
    "get": lambda store: store.get("s1"),
    "delete": lambda store: store.delete("s1"),
    "list_sessions": lambda store: store.list_sessions(0, ""),
    "append": lambda store: store.append("s1", [NewFrame(role=Role.USER, content="hi")], 60),
    "list_frames": lambda store: store.list_frames("s1", 0, False, 0, ""),
    "watch": lambda store: anext(store.watch("s1", 0)),
}


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def port() -> int:
    return unused_port()


@pytest.fixture
async def unreachable(port: int) -> AsyncIterator[RedisStore]:
    store = RedisStore(f"redis://:s3cret@127.0.0.1:{port}/0")
    yield store
    await store.close()


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_every_call_to_an_unreachable_redis_is_store_unavailable(unreachable: RedisStore, port: int, call):
    with pytest.raises(StoreUnavailable, match=rf"^session store \(redis at 127\.0\.0\.1:{port}\) is unreachable: "
                                               "ConnectionError;") as caught:
        await call(unreachable)
    assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)


async def test_the_unavailable_message_never_contains_the_redis_password(unreachable: RedisStore) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await unreachable.get("s1")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("where", "reason"),
    [("under_a_file", "cannot create its directory"), ("a_directory", "cannot be opened")],
)
async def test_opening_sqlite_on_an_unusable_path_is_store_unavailable(tmp_path: Path, where: str, reason: str):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "sessions.db" if where == "under_a_file" else tmp_path
    store = SqliteStore(str(path))
    with pytest.raises(StoreUnavailable, match=rf"^session store \(sqlite at {re.escape(str(path))}\) {reason}"):
        await store.open()
    await store.close()

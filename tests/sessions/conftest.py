"""Fixtures for the session store tests: one real redis-server for the whole
run, a fake clock, and `make_store`, a factory parametrized over the three
stores. Stores made by one `make_store` share their backing data (the same
SQLite file, the same Redis prefix), as two gateway processes would."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from gateway.sessions.memory import MemoryStore
from gateway.sessions.redis import RedisStore
from gateway.sessions.sqlite import SqliteStore
from gateway.sessions.store import SessionStore, StoreLimits

LIMITS = StoreLimits(max_frames=100, max_page_size=10, default_page_size=4)
KINDS = ["memory", "sqlite", "redis"]

MakeStore = Callable[..., Awaitable[SessionStore]]


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds




@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_store(kind: str, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest):
    """make_store(limits=LIMITS) -> a new store of `kind`, closed after the test."""
    url = request.getfixturevalue("redis_url") if kind == "redis" else ""
    prefix = f"test-{uuid.uuid4().hex}:"
    path = str(tmp_path / "nested" / "sessions.db")
    stores: list[SessionStore] = []

    async def make(limits: StoreLimits = LIMITS) -> SessionStore:
        store: SessionStore
        if kind == "memory":
            store = MemoryStore(limits, clock)
        elif kind == "sqlite":
            sqlite_store = SqliteStore(path, limits, clock)
            await sqlite_store.open()
            store = sqlite_store
        else:
            store = RedisStore(url, limits, clock, prefix=prefix)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> SessionStore:
    return await make_store()

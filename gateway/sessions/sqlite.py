"""A session store in one SQLite file: the default, it survives restarts.

Usage: `store = SqliteStore(path, limits, clock); await store.open()` (creates
the file, its parent directories and the schema), then `await store.close()`.

All SQLite work runs on one dedicated worker thread that owns the only
connection, so the event loop never blocks on disk or on a lock. The file is
in WAL mode with synchronous=NORMAL. Every write is one `BEGIN IMMEDIATE`
transaction, so seqs stay gap-free even when several gateway processes share
the file. Watchers are woken at once by appends made through this store, and
poll the file every `poll_interval` seconds for appends made by other
processes. Expired sessions read as missing and are deleted when next touched.
Each session's row keeps its own ttl, which every append renews it by.

A busy or locked database (past the 30 s busy timeout), a file SQLite cannot
open and a directory that cannot be created raise StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator, Mapping, Sequence, TypeVar

from gateway.errors import AlreadyExists, StoreUnavailable
from gateway.sessions import codec
from gateway.sessions.store import FrameRecord, NewFrame, SessionRecord, StoreLimits

T = TypeVar("T")
SQLITE_MAX_INTEGER = 2**63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    system_prompt TEXT NOT NULL,
    metadata TEXT NOT NULL,
    owner TEXT NOT NULL,
    create_time REAL NOT NULL,
    update_time REAL NOT NULL,
    expire_time REAL NOT NULL,
    last_seq INTEGER NOT NULL,
    ttl REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_update ON sessions (update_time DESC, id);
CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions (owner, update_time DESC, id);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expire_time);
CREATE TABLE IF NOT EXISTS frames (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
"""

_COLUMNS = "id, system_prompt, metadata, owner, create_time, update_time, expire_time, last_seq, ttl"
_EXPIRED = "expire_time > 0 AND expire_time <= ?"


def _record(row: tuple) -> SessionRecord:
    id_, prompt, metadata, owner, created, updated, expires, last_seq, _ttl = row
    return SessionRecord(
        id=id_, system_prompt=prompt, metadata=json.loads(metadata), create_time=created,
        update_time=updated, expire_time=expires, last_seq=last_seq, owner=owner,
    )


def _unavailable(path: str, exc: Exception) -> StoreUnavailable | None:
    """The StoreUnavailable that `exc` (raised on the worker thread) amounts to, if any."""
    where = f"session store (sqlite at {path})"
    if isinstance(exc, OSError):
        return StoreUnavailable(f"{where} cannot create its directory {exc.filename}: {exc.strerror};"
                                " check sessions.path")
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreUnavailable(f"{where} is busy: {exc}; another process is holding its write lock, retry later")
    if name.startswith("SQLITE_CANTOPEN"):
        return StoreUnavailable(f"{where} cannot be opened: {exc}; check that sessions.path names a writable file")
    return None


class SqliteStore:
    """Implements gateway.sessions.store.SessionStore on the SQLite file at `path`."""

    def __init__(
        self, path: str, limits: StoreLimits = StoreLimits(), clock: Callable[[], float] = time.time,
        poll_interval: float = 0.25,
    ) -> None:
        self._path = path
        self._limits = limits
        self._clock = clock
        self._poll_interval = poll_interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turnout-sqlite")
        self._db: sqlite3.Connection | None = None
        self._wakeups: dict[str, asyncio.Event] = {}

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown()

    async def create(
        self, session_id: str, system_prompt: str, metadata: Mapping[str, str], ttl: float, owner: str = ""
    ) -> SessionRecord:
        session_id = codec.new_session_id(session_id)
        return await self._run(self._create, session_id, system_prompt, metadata, ttl, owner, self._clock())

    async def get(self, session_id: str) -> SessionRecord:
        return await self._run(self._get, session_id, self._clock())

    async def delete(self, session_id: str) -> None:
        await self._run(self._delete, session_id, self._clock())
        self._wake(session_id)

    async def list_sessions(self, page_size: int, page_token: str, owner: str = "") -> tuple[list[SessionRecord], str]:
        size = codec.page_size(page_size, self._limits)
        offset = codec.offset_page(page_token)
        records = await self._run(self._list, size + 1, offset, owner, self._clock())
        return records[:size], codec.next_offset_token(offset, size, len(records) > size)

    async def append(
        self, session_id: str, frames: Sequence[NewFrame], ttl_if_created: float,
        expected_seq: int | None = None, owner: str = "",
    ) -> list[FrameRecord]:
        added = await self._run(
            self._append, session_id, tuple(frames), ttl_if_created, expected_seq, owner, self._clock()
        )
        self._wake(session_id)
        return added

    async def list_frames(
        self, session_id: str, from_seq: int, newest_first: bool, page_size: int, page_token: str
    ) -> tuple[list[FrameRecord], str]:
        size = codec.page_size(page_size, self._limits)
        last_seq = (await self.get(session_id)).last_seq
        window = codec.frame_window(last_seq, from_seq, newest_first, size, page_token)
        page = await self._run(self._frames, session_id, window.lo, window.hi)
        return (page[::-1] if newest_first else page), window.next_token

    async def watch(self, session_id: str, after_seq: int) -> AsyncIterator[FrameRecord]:
        last = min(after_seq, SQLITE_MAX_INTEGER)
        batch = self._limits.max_page_size
        while True:
            wakeup = self._wakeups.setdefault(session_id, asyncio.Event())
            frames = await self._run(self._frames_after, session_id, last, batch, self._clock())
            for frame in frames:
                last = frame.seq
                yield frame
            if len(frames) < batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), self._poll_interval)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """Runs `fn` on the worker thread; the one place outages become StoreUnavailable."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except (sqlite3.OperationalError, OSError) as exc:
            unavailable = _unavailable(self._path, exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    def _wake(self, session_id: str) -> None:
        wakeup = self._wakeups.pop(session_id, None)
        if wakeup is not None:
            wakeup.set()

    # Everything below runs on the worker thread.

    def _open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None, timeout=30.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            with self._transaction(db):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
        except BaseException:
            db.close()
            raise
        self._db = db

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("SqliteStore used before `await store.open()` or after close()")
        return self._db

    @contextlib.contextmanager
    def _transaction(self, db: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        db = db or self._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _live_row(self, db: sqlite3.Connection, session_id: str, now: float) -> tuple | None:
        """The session's row, or None; an expired one is deleted (call inside a transaction)."""
        row = db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None or not codec.is_expired(row[6], now):
            return row
        db.execute("DELETE FROM frames WHERE session_id = ?", (session_id,))
        db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return None

    def _read_row(self, session_id: str, now: float) -> tuple:
        """The live session's row; an expired one is deleted, then reported missing."""
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is not None and codec.is_expired(row[6], now):
            with self._transaction() as db:
                row = self._live_row(db, session_id, now)
        if row is None:
            raise codec.not_found(session_id)
        return row

    def _create(
        self, session_id: str, prompt: str, metadata: Mapping[str, str], ttl: float, owner: str, now: float
    ) -> SessionRecord:
        with self._transaction() as db:
            if self._live_row(db, session_id, now) is not None:
                raise AlreadyExists(f"session {session_id!r} already exists; choose another id or leave it empty")
            row = (session_id, prompt, codec.metadata_to_json(metadata), owner, now, now,
                   codec.expire_time(now, ttl), 0, ttl)
            db.execute(f"INSERT INTO sessions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        return _record(row)

    def _get(self, session_id: str, now: float) -> SessionRecord:
        return _record(self._read_row(session_id, now))

    def _delete(self, session_id: str, now: float) -> None:
        with self._transaction() as db:
            if self._live_row(db, session_id, now) is None:
                raise codec.not_found(session_id)
            db.execute("DELETE FROM frames WHERE session_id = ?", (session_id,))
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def _list(self, limit: int, offset: int, owner: str, now: float) -> list[SessionRecord]:
        with self._transaction() as db:
            db.execute(f"DELETE FROM frames WHERE session_id IN (SELECT id FROM sessions WHERE {_EXPIRED})", (now,))
            db.execute(f"DELETE FROM sessions WHERE {_EXPIRED}", (now,))
        where = "WHERE owner = ?" if owner else ""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM sessions {where} ORDER BY update_time DESC, id LIMIT ? OFFSET ?",
            ((owner,) if owner else ()) + (limit, offset),
        ).fetchall()
        return [_record(row) for row in rows]

    def _append(
        self, session_id: str, frames: tuple[NewFrame, ...], ttl_if_created: float, expected_seq: int | None,
        owner: str, now: float,
    ) -> list[FrameRecord]:
        with self._transaction() as db:
            row = self._live_row(db, session_id, now)
            last_seq, ttl = (row[7], row[8]) if row else (0, ttl_if_created)
            codec.check_append(session_id, last_seq, len(frames), expected_seq, self._limits)
            if row is None:
                db.execute(f"INSERT INTO sessions ({_COLUMNS}) VALUES (?, '', '{{}}', ?, ?, ?, ?, 0, ?)",
                           (session_id, owner, now, now, 0.0, ttl))
            db.executemany(
                "INSERT INTO frames (session_id, seq, body) VALUES (?, ?, ?)",
                [(session_id, last_seq + i, codec.frame_to_json(f, now)) for i, f in enumerate(frames, start=1)],
            )
            db.execute("UPDATE sessions SET update_time = ?, expire_time = ?, last_seq = ? WHERE id = ?",
                       (now, codec.expire_time(now, ttl), last_seq + len(frames), session_id))
        return [codec.record_frame(last_seq + i, f, now) for i, f in enumerate(frames, start=1)]

    def _frames(self, session_id: str, lo: int, hi: int) -> list[FrameRecord]:
        rows = self._conn.execute(
            "SELECT seq, body FROM frames WHERE session_id = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (session_id, lo, hi),
        ).fetchall()
        return [codec.frame_from_json(seq, body) for seq, body in rows]

    def _frames_after(self, session_id: str, after_seq: int, limit: int, now: float) -> list[FrameRecord]:
        self._read_row(session_id, now)
        rows = self._conn.execute(
            "SELECT seq, body FROM frames WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (session_id, after_seq, limit),
        ).fetchall()
        return [codec.frame_from_json(seq, body) for seq, body in rows]

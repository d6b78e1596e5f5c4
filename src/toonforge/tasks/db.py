"""Database engine and sessions: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, create_engine, event, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

try:
    import fcntl
except ImportError:  # not on Windows: processes there rely on SQLite's own lock
    fcntl = None  # type: ignore[assignment]

# What a database that cannot answer now raises (down, restarting, locked past the busy
# timeout, no free pooled connection), as opposed to a bug in a statement.
DB_OUTAGE_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError)
DB_UNAVAILABLE = "The database is unavailable at the moment; retry shortly."

# How long a writer waits for SQLite's write lock before the request is answered 503 (with
# Retry-After) instead of holding a thread: writes are short, so a longer wait means trouble.
SQLITE_BUSY_SECONDS = 5.0
# How long a request waits for a free pooled connection before it is answered 503.
POOL_TIMEOUT_SECONDS = 10.0


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    """`pool_size` should match the number of threads that use the engine at once (the API
    sizes its thread pool to it), so no request waits for a connection another holds."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, pool_size)
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        # A dead server must not hang a request for minutes: fail fast, answer 503.
        connect_args={"connect_timeout": 3},
    )


def _sqlite_engine(url: str, pool_size: int) -> Engine:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_SECONDS,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin, so that
        # every transaction can start as BEGIN IMMEDIATE below.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
        cur.close()

    # One writer at a time, decided before SQLite is asked: SQLite admits one writer anyway,
    # and a writer waiting on SQLite's own lock sleeps and retries (1, 2, 5 … 100 ms), which
    # made throughput fall and latency soar as writers were added. Threads of a process queue
    # on a lock; processes (API processes, workers) on a lock file beside the database.
    write_lock = WriteLock(Path(path + ".writelock") if path and path != ":memory:" else None)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction (the claim,
        # the concurrency check) can then never fail halfway with SQLITE_BUSY on upgrade.
        # Read-only sessions (Detail, the WebSocket, downloads, authentication) begin
        # DEFERRED so that, with WAL, they never wait for or hold up anybody's writes.
        if conn.get_execution_options().get(READONLY_OPTION, False):
            conn.exec_driver_sql("BEGIN")
            return
        if not write_lock.acquire(SQLITE_BUSY_SECONDS):
            raise OperationalError(
                "BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")
            )
        conn.info[_HOLDS_WRITE_LOCK] = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(conn)
            raise

    def _release(conn: Any) -> None:
        if conn.info.pop(_HOLDS_WRITE_LOCK, False):
            write_lock.release()

    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        # A connection given back without a commit or rollback through SQLAlchemy (a
        # session dropped unclosed): its transaction ends here, and so does its hold.
        if record is not None and record.info.pop(_HOLDS_WRITE_LOCK, False):
            write_lock.release()

    return engine


class WriteLock:
    """A lock for this process's threads, then (with a file) for every process on the
    database: `flock` on the file, tried every half millisecond until the deadline (a
    blocking `flock` cannot time out, and a writer must be answered 503, not hang)."""

    POLL_SECONDS = 0.0005

    def __init__(self, file: Path | None) -> None:
        self._threads = threading.Lock()
        self._fd = os.open(file, os.O_CREAT | os.O_RDWR, 0o600) if file and fcntl else None

    def acquire(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._threads.acquire(timeout=timeout):
            return False
        if self._fd is None:
            return True
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[union-attr]
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._threads.release()
                    return False
                time.sleep(self.POLL_SECONDS)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)  # type: ignore[union-attr]
        self._threads.release()


READONLY_OPTION = "toonforge_readonly"
_HOLDS_WRITE_LOCK = "toonforge_holds_write_lock"


def make_sessionmaker(engine: Engine, *, readonly: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine`; `readonly` ones are for paths that never write."""
    bind = engine.execution_options(**{READONLY_OPTION: True}) if readonly else engine
    return sessionmaker(bind, expire_on_commit=False)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def claim_first(
    session: Session,
    id_column: InstrumentedAttribute[int],
    candidate: Select[Any],
    *,
    where: Sequence[ColumnElement[bool]] = (),
    **values: Any,
) -> int | None:
    """Atomically take the first row of `candidate` (a select of `id_column`, ordered):
    UPDATE … WHERE id = (SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED) AND <where> RETURNING id.
    `where` repeats the candidate's condition so that PostgreSQL, which re-evaluates the
    outer WHERE on the row it locked, never takes a row another claim changed meanwhile. On
    SQLite the lock clause compiles away and BEGIN IMMEDIATE gives the same guarantee."""
    first = candidate.limit(1).with_for_update(skip_locked=True).scalar_subquery()
    table = id_column.class_
    return session.scalar(
        update(table).where(id_column == first, *where).values(**values).returning(id_column)
    )

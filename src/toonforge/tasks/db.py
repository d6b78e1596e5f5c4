"""Database engine and sessions: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, create_engine, event, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

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

    # One writer per process at a time: SQLite admits one writer anyway, and threads that
    # wait here queue in order, where threads waiting on SQLite's own lock sleep and retry
    # (1, 2, 5 … 100 ms), which made throughput fall and latency soar as writers were added.
    # Across processes SQLite's lock still decides.
    write_lock = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction (the claim,
        # the concurrency check) can then never fail halfway with SQLITE_BUSY on upgrade.
        # Read-only sessions (Detail, the WebSocket, downloads, authentication) begin
        # DEFERRED so that, with WAL, they never wait for or hold up anybody's writes.
        if conn.get_execution_options().get(READONLY_OPTION, False):
            conn.exec_driver_sql("BEGIN")
            return
        if not write_lock.acquire(timeout=SQLITE_BUSY_SECONDS):
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

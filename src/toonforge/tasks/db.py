"""Database engine and sessions: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, create_engine, event, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_engine(url: str) -> Engine:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin, so that
        # every transaction can start as BEGIN IMMEDIATE below.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction (the claim,
        # the concurrency check) can then never fail halfway with SQLITE_BUSY on upgrade.
        # Read-only sessions (WebSocket polling, file downloads) begin DEFERRED so that,
        # with WAL, they never wait for or hold up the worker's writes.
        readonly = conn.get_execution_options().get(READONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


READONLY_OPTION = "toonforge_readonly"


def make_sessionmaker(engine: Engine, *, readonly: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine`; `readonly` ones are for paths that never write."""
    bind = engine.execution_options(**{READONLY_OPTION: True}) if readonly else engine
    return sessionmaker(bind, expire_on_commit=False)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def claim_first(
    session: Session, id_column: InstrumentedAttribute[int], candidate: Select[Any], **values: Any
) -> int | None:
    """Atomically take the first row of `candidate` (a select of `id_column`, ordered):
    UPDATE … WHERE id = (SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id. On SQLite the
    lock clause compiles away and BEGIN IMMEDIATE gives the same guarantee."""
    first = candidate.limit(1).with_for_update(skip_locked=True).scalar_subquery()
    table = id_column.class_
    return session.scalar(
        update(table).where(id_column == first).values(**values).returning(id_column)
    )

"""Fixtures: real `toonforge serve` processes on loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import Client, Server, base_env, create_keys
from toonforge.testing import (
    InProcess,
    S3Server,
    SignedClient,
    fresh_postgres_database,
    in_process_app,
    new_project,
    s3_server,
    settings_for_test,
)

POSTGRES_ADMIN_URL = os.environ.get(
    "TOONFORGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session", autouse=True)
def _shared_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOONFORGE_TEST_TINY_DIR", str(tmp_path_factory.mktemp("tiny")))


def _postgres_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server, dropped afterwards (skipped where
    there is no server, except in CI)."""
    from sqlalchemy.exc import OperationalError

    databases = fresh_postgres_database(POSTGRES_ADMIN_URL)
    try:
        url = databases.__enter__()
    except OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    try:
        yield url
    finally:
        databases.__exit__(None, None, None)


@pytest.fixture(scope="session")
def database_factory() -> Iterator[Any]:
    """Makes database URLs for a backend name; PostgreSQL databases are dropped at the end."""
    cleanups: list[Iterator[str]] = []

    def make(backend: str) -> str | None:
        if backend == "sqlite":
            return None
        gen = _postgres_database()
        url = next(gen)
        cleanups.append(gen)
        return url

    yield make
    for gen in cleanups:
        next(gen, None)


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(
    backend: str, database_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One shared server per backend, callbacks to loopback allowed (the tests' receivers
    live there)."""
    srv = Server(
        tmp_path_factory.mktemp(f"server-{backend}"),
        database_factory(backend),
        TOONFORGE_CALLBACK_ALLOW_PRIVATE="true",
        TOONFORGE_CALLBACK_BACKOFF_SECONDS="0.2",
    )
    srv.keys = create_keys(srv.env)  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> Client:
    return Client(server.url, server.keys)  # type: ignore[attr-defined]


@pytest.fixture
def make_server(tmp_path: Path, backend: str, database_factory: Any) -> Iterator[Any]:
    """Servers of a test's own (its own database), stopped at the end of the test."""
    servers: list[Server] = []

    def make(workers: int = 1, **env: str) -> Server:
        srv = Server(tmp_path / f"srv{len(servers)}", database_factory(backend), workers, **env)
        srv.keys = create_keys(srv.env)  # type: ignore[attr-defined]
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def inproc(tmp_path: Path, backend: str, database_factory: Any) -> Iterator[InProcess]:
    """The fast tier: the API in process on a database of the test's own, no worker."""
    settings = settings_for_test(tmp_path / "data", database_factory(backend))
    with in_process_app(settings, dispatch_callbacks=False) as (http, services):
        keys = new_project(services)
        yield InProcess(http, services, keys, SignedClient(http, keys))


__all__ = ["base_env"]


# -- object storage ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One S3 API server (moto) on loopback for the session; each test takes its own bucket."""
    with s3_server() as server:
        yield server

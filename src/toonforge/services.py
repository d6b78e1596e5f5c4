"""The one place that builds toonforge's services from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from toonforge.catalog import Catalog, load_catalog
from toonforge.catalog.availability import ToolAvailability
from toonforge.settings import Settings
from toonforge.storage import Storage, open_storage
from toonforge.storage.links import FileLinks
from toonforge.tasks.db import make_engine, make_sessionmaker
from toonforge.tasks.migrate import upgrade
from toonforge.tasks.notify import Notifier

log = logging.getLogger("toonforge")


@dataclass
class Services:
    settings: Settings
    db: Engine
    sessions: sessionmaker[Session]
    # For paths that only read (WebSocket polling, file downloads): on SQLite they do not
    # take the write lock.
    read_sessions: sessionmaker[Session]
    catalog: Catalog
    storage: Storage
    links: FileLinks  # the URLs clients get for stored files
    notifier: Notifier
    availability: ToolAvailability

    def close(self) -> None:
        self.notifier.close()
        self.db.dispose()


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if migrate:
        upgrade(url)
    # Every API thread may hold a connection, plus the process's own background threads
    # (callback dispatcher, WebSocket hub, heartbeat).
    db = make_engine(url, pool_size=settings.api_threads + 4)
    notifier = Notifier(db, settings.data_dir / "state" / "wake")
    sessions = make_sessionmaker(db)
    notifier.install(sessions)
    storage = open_storage(settings)
    links = FileLinks(settings.resolved_public_url, storage, settings.output_retention_seconds)
    return Services(
        settings=settings,
        db=db,
        sessions=sessions,
        read_sessions=make_sessionmaker(db, readonly=True),
        catalog=load_catalog(settings.extra_tools_dirs),
        storage=storage,
        links=links,
        notifier=notifier,
        availability=ToolAvailability(settings),
    )

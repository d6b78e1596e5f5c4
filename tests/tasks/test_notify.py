"""Wake-ups: a committed transaction wakes the listeners of its channel in other processes'
notifiers (LISTEN/NOTIFY on PostgreSQL, loopback datagrams on SQLite); a rolled-back one does
not. Real databases, real sockets."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

from sqlalchemy import text

from toonforge.services import build_services
from toonforge.tasks.notify import EVENTS, QUEUE, announce
from toonforge.testing import settings_for_test


def test_commits_wake_listeners_and_rollbacks_do_not(
    tmp_path: Path, backend: str, database_factory: Any
) -> None:
    url = database_factory(backend)
    sender = build_services(settings_for_test(tmp_path / "data", url))
    receiver = build_services(settings_for_test(tmp_path / "data", url), migrate=False)
    heard: queue.Queue[tuple[str, str]] = queue.Queue()
    listener = receiver.notifier.listener()
    listener.subscribe(QUEUE, lambda c, p: heard.put((c, p)))
    listener.subscribe(EVENTS, lambda c, p: heard.put((c, p)))
    assert listener.connected.wait(10), "the listener never connected"
    try:
        with sender.sessions() as session:
            session.execute(text("SELECT 1"))
            announce(session, QUEUE, "owner/tool")
            announce(session, EVENTS, "42")
            session.rollback()
        with sender.sessions() as session:
            session.execute(text("SELECT 1"))
            announce(session, EVENTS, "7")
            session.commit()
        assert heard.get(timeout=5) == (EVENTS, "7")
        # The rolled-back wake-ups never arrive.
        try:
            extra = heard.get(timeout=0.5)
        except queue.Empty:
            extra = None
        assert extra is None
    finally:
        receiver.close()
        sender.close()

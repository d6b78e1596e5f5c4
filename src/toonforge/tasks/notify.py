"""Wake-ups instead of polling: a new task wakes idle workers, a task event wakes the
WebSocket followers of that task, a new callback wakes the dispatcher.

- PostgreSQL: `pg_notify` inside the writing transaction (delivered only if it commits), and
  one LISTEN connection per process, fanned out in memory.
- SQLite (one host by nature): after the commit, one UDP datagram on loopback to every
  process listening on this data folder; each registers its port as a file in
  `DATA_DIR/state/wake/`.

A wake-up says "look now", never "this is the data": listeners read the database, so a lost
or duplicated wake-up costs latency, never correctness. Listeners still look on their own,
rarely, as a safety net, and after their LISTEN connection comes back (`on_resync`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from toonforge.processes import pid_alive

log = logging.getLogger("toonforge.notify")

QUEUE = "toonforge_queue"  # payload: the tool key of a task that became claimable
EVENTS = "toonforge_events"  # payload: the id of a task that has a new event
CALLBACKS = "toonforge_callbacks"  # payload: a task id whose callback is due
CHANNELS = (QUEUE, EVENTS, CALLBACKS)

_PENDING = "toonforge_notify"
_PEERS_CACHE_SECONDS = 1.0

Handler = Callable[[str, str], None]


def announce(session: Session, channel: str, payload: str) -> None:
    """Wake listeners of `channel` when this session's transaction commits."""
    session.info.setdefault(_PENDING, set()).add((channel, payload))


class Notifier:
    """Sends the wake-ups of committed transactions and runs this process's listener."""

    def __init__(self, engine: Engine, wake_dir: Path) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.wake_dir = wake_dir
        self._peers: list[int] = []
        self._peers_read = 0.0
        self._send_sock: socket.socket | None = None
        self._listener: Listener | None = None
        self._lock = threading.Lock()

    # -- sending ------------------------------------------------------------------------------

    def install(self, factory: sessionmaker[Session]) -> None:
        event.listen(factory, "before_commit", self._before_commit)
        event.listen(factory, "after_commit", self._after_commit)
        event.listen(factory, "after_rollback", self._after_rollback)

    def _before_commit(self, session: Session) -> None:
        if self.postgres and session.info.get(_PENDING):
            for channel, payload in sorted(session.info[_PENDING]):
                session.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})

    def _after_commit(self, session: Session) -> None:
        pending = session.info.pop(_PENDING, None)
        if pending and not self.postgres:
            for channel, payload in pending:
                self.send_datagram(channel, payload)

    def _after_rollback(self, session: Session) -> None:
        session.info.pop(_PENDING, None)

    def send_datagram(self, channel: str, payload: str) -> None:
        data = f"{channel}\n{payload}".encode()
        with self._lock:
            if self._send_sock is None:
                self._send_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._send_sock.setblocking(False)
            sock = self._send_sock
            for port in self._peer_ports():
                # A full buffer or a vanished peer: the listener's safety poll covers it.
                with contextlib.suppress(OSError):
                    sock.sendto(data, ("127.0.0.1", port))

    def _peer_ports(self) -> list[int]:
        now = time.monotonic()
        if now - self._peers_read < _PEERS_CACHE_SECONDS:
            return self._peers
        self._peers_read = now
        ports = []
        for entry in self.wake_dir.glob("*.port"):
            pid_text, _, port_text = entry.stem.partition("-")
            if not (pid_text.isdigit() and port_text.isdigit()):
                continue
            if not pid_alive(int(pid_text)):
                entry.unlink(missing_ok=True)
                continue
            ports.append(int(port_text))
        self._peers = ports
        return ports

    # -- listening ----------------------------------------------------------------------------

    def listener(self) -> Listener:
        """This process's one listener (started on first use), shared by all consumers."""
        with self._lock:
            if self._listener is None:
                self._listener = Listener(self)
                self._listener.start()
            return self._listener

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            if self._send_sock is not None:
                self._send_sock.close()
                self._send_sock = None
        if listener is not None:
            listener.stop()


class Listener:
    """One thread per process: LISTEN (PostgreSQL) or a loopback UDP socket (SQLite)."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self._handlers: list[tuple[str, Handler]] = []
        self._resync: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self.connected = threading.Event()
        self._port = 0

    def subscribe(
        self, channel: str, handler: Handler, on_resync: Callable[[], None] | None = None
    ) -> None:
        self._handlers.append((channel, handler))
        if on_resync is not None:
            self._resync.append(on_resync)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._port:
            # Wake our own receive so the thread ends now, not at its next timeout.
            with (
                contextlib.suppress(OSError),
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
            ):
                s.sendto(b"", ("127.0.0.1", self._port))
            self._thread.join(timeout=5)
        # A LISTEN connection notices the flag within a second by itself (daemon thread).

    def _dispatch(self, channel: str, payload: str) -> None:
        for wanted, handler in list(self._handlers):
            if wanted == channel:
                try:
                    handler(channel, payload)
                except Exception:
                    log.exception("wake-up handler failed")

    def _resynced(self) -> None:
        self.connected.set()
        for fn in list(self._resync):
            try:
                fn()
            except Exception:
                log.exception("resync handler failed")

    def _run(self) -> None:
        if self.notifier.postgres:
            self._run_postgres()
        else:
            self._run_datagrams()

    def _run_postgres(self) -> None:
        import psycopg

        url = make_url(self.notifier.engine.url).set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
                    for channel in CHANNELS:
                        conn.execute(f"LISTEN {channel}")
                    delay = 0.5
                    self._resynced()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._dispatch(note.channel, note.payload)
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning("LISTEN connection lost (%s); reconnecting", type(exc).__name__)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _run_datagrams(self) -> None:
        wake_dir = self.notifier.wake_dir
        wake_dir.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1.0)
        port = self._port = sock.getsockname()[1]
        entry = wake_dir / f"{os.getpid()}-{port}.port"
        entry.touch()
        self._resynced()
        try:
            while not self._stop.is_set():
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                channel, _, payload = data.decode(errors="replace").partition("\n")
                self._dispatch(channel, payload)
        finally:
            entry.unlink(missing_ok=True)
            sock.close()

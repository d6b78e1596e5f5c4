"""Delivers pending callbacks (rows of callback_deliveries) from a background thread.

Rows are claimed with a short lock so several API processes can run dispatchers side by side;
every attempt is recorded, and the task's Detail shows the delivery state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from urllib.parse import urlsplit

from sqlalchemy import case, func, or_, select

from toonforge.callbacks.address_guard import CallbackRefused
from toonforge.callbacks.sender import AttemptResult, backoff_seconds, send_once
from toonforge.ops.logging import bind as bind_log
from toonforge.ops.logging import log_context
from toonforge.services import Services
from toonforge.tasks.db import claim_first
from toonforge.tasks.models import CallbackAttempt, CallbackDelivery, Project, Task
from toonforge.tasks.notify import CALLBACKS
from toonforge.tasks.record import task_record
from toonforge.tasks.task_metrics import record_callback_settled

log = logging.getLogger("toonforge.callbacks")

LOCK_SECONDS = 120.0
# With nothing due, look again after this long anyway (a safety net under the wake-ups).
IDLE_SECONDS = 5.0
ERROR_PAUSE_SECONDS = 1.0


class CallbackDispatcher:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        listener = self.services.notifier.listener()
        listener.subscribe(CALLBACKS, lambda _c, _p: self._wake.set(), self._wake.set)
        self._thread = threading.Thread(target=self._loop, name="callbacks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
                idle = 0.0 if worked else self._until_next_due()
            except Exception:  # a broken row or a database blip must not stop deliveries
                log.exception("callback dispatcher error")
                idle = ERROR_PAUSE_SECONDS
            if idle > 0:
                # Woken at once when a task ends with a callback (see tasks/notify.py).
                self._wake.wait(idle)
                self._wake.clear()

    def _until_next_due(self) -> float:
        """Seconds until the earliest pending retry (at most IDLE_SECONDS)."""
        with self.services.read_sessions() as session:
            # A delivery another dispatcher holds is due when its lock runs out.
            locked = CallbackDelivery.locked_until > CallbackDelivery.next_attempt_at
            due_at = case(
                (locked, CallbackDelivery.locked_until), else_=CallbackDelivery.next_attempt_at
            )
            due = session.scalar(
                select(func.min(due_at)).where(CallbackDelivery.state == "pending")
            )
        if due is None:
            return IDLE_SECONDS
        return min(IDLE_SECONDS, max(0.05, due - time.time()))

    def _claim(self) -> int | None:
        now = time.time()
        with self.services.sessions() as session:
            candidate = (
                select(CallbackDelivery.id)
                .where(
                    CallbackDelivery.state == "pending",
                    CallbackDelivery.next_attempt_at <= now,
                    or_(
                        CallbackDelivery.locked_until.is_(None),
                        CallbackDelivery.locked_until < now,
                    ),
                )
                .order_by(CallbackDelivery.next_attempt_at)
            )
            claimed = claim_first(
                session, CallbackDelivery.id, candidate, locked_until=now + LOCK_SECONDS
            )
            session.commit()
            return claimed

    def run_once(self) -> bool:
        """Claim one due delivery, send it with no transaction open, record the outcome in a
        transaction of its own (its log lines carry the task's and project's ids)."""
        with log_context():
            return self._run_once()

    def _run_once(self) -> bool:
        delivery_id = self._claim()
        if delivery_id is None:
            return False
        with self.services.read_sessions() as session:
            delivery = session.get(CallbackDelivery, delivery_id)
            task = session.get(Task, delivery.task_id) if delivery else None
            if delivery is None or task is None:
                return True
            bind_log(task_id=task.id, project_id=task.project_id)
            project = session.get(Project, task.project_id)
            record = task_record(
                task,
                links=self.services.links,
                manifest=self.services.catalog.by_key(task.tool_key),
            )
            url, msg_id, attempt_no, task_id = (
                delivery.url,
                delivery.msg_id,
                delivery.attempts + 1,
                task.id,
            )
            secret = project.webhook_secret if project is not None else None
        result = self._send(url, json.dumps(record).encode(), secret, msg_id)
        state = self._record_attempt(delivery_id, attempt_no, result)
        log.info(
            "callback for task %s attempt %d: %s %s",
            task_id,
            attempt_no,
            state,
            result.error or result.status_code,
        )
        return True

    def _record_attempt(self, delivery_id: int, attempt_no: int, result: AttemptResult) -> str:
        settings = self.services.settings
        with self.services.sessions() as session:
            delivery = session.get(CallbackDelivery, delivery_id)
            if delivery is None:
                return "gone"
            session.add(
                CallbackAttempt(
                    delivery_id=delivery.id,
                    attempt=attempt_no,
                    at=time.time(),
                    status_code=result.status_code,
                    ok=result.ok,
                    error=result.error,
                    duration_ms=result.duration_ms,
                )
            )
            delivery.attempts = attempt_no
            delivery.locked_until = None
            delivery.last_error = result.error
            if result.ok:
                delivery.state = "delivered"
            elif not result.retryable:
                delivery.state = "refused" if result.refused else "failed"
            elif attempt_no >= settings.callback_max_attempts:
                delivery.state = "failed"
            else:
                wait = backoff_seconds(attempt_no, settings.callback_backoff_seconds)
                delivery.next_attempt_at = time.time() + max(wait, result.retry_after or 0.0)
            state = delivery.state
            if state != "pending":
                record_callback_settled(session, state)
            session.commit()
            return state

    def _send(self, url: str, body: bytes, secret: str | None, msg_id: str) -> AttemptResult:
        settings = self.services.settings
        if urlsplit(url).scheme not in ("http", "https"):
            return _not_sent(f"callbackUrl is not an http(s) URL; nothing was sent: {url[:200]!r}")
        if secret is None:
            return _not_sent("the task's project no longer exists; nothing was sent")
        try:
            return send_once(
                url,
                body,
                secret=secret,
                msg_id=msg_id,
                timeout=settings.callback_timeout_seconds,
                allow_private=settings.callback_allow_private,
            )
        except CallbackRefused as exc:
            return _not_sent(str(exc), retryable=exc.retryable)
        except ValueError as exc:  # a malformed secret or id: retrying cannot help
            return _not_sent(str(exc))


def _not_sent(error: str, *, retryable: bool = False) -> AttemptResult:
    return AttemptResult(
        ok=False,
        status_code=None,
        retryable=retryable,
        duration_ms=0,
        refused=not retryable,
        error=error,
    )

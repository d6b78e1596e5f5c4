"""PostgreSQL restarts under a loaded `serve`: clients get 200 or a clean 503, nothing is
lost, the API and the worker reconnect by themselves.

The database is a private server of this test's (tests/pgserver.py), so stopping it
disturbs no other test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pgserver import PgServer
from support import CARTOON, SMALL, Client, Server

pytestmark = pytest.mark.postgres

# Runs across the outage (many steps; the outage starts at its first progress frame).
RUNNING = {**SMALL, "steps": 100, "width": 128, "height": 128, "seed": "7"}
QUEUED = 5
DOWN_SECONDS = 3.0
# Runs the client loop may add (each is a task that must then finish too), one try per
# RUN_EVERY seconds.
MAX_NEW_RUNS = 15
RUN_EVERY = 0.4


@dataclass
class Answer:
    kind: str  # "detail" | "run"
    at: float
    status: int | None = None
    body: Any = None
    retry_after: str | None = None
    error: str | None = None  # a transport failure: reset, dropped, timed out

    def acceptable(self) -> bool:
        if self.error is not None or not isinstance(self.body, dict):
            return False
        if self.status == 200:
            return self.body.get("result") is True
        if self.status == 503:
            errors = self.body.get("errors")
            return (
                self.body.get("result") is False
                and isinstance(errors, list)
                and bool(errors)
                and all(isinstance(e, dict) and e.get("message") for e in errors)
                and bool(self.retry_after)
            )
        return False


@dataclass
class Hammer:
    """Client threads sending Task/Detail and Run as fast as they are answered."""

    client: Client
    watch: str
    answers: list[Answer] = field(default_factory=list)
    new_tasks: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _one(self, kind: str, path: str, body: dict[str, Any]) -> Answer:
        answer = Answer(kind, time.monotonic())
        try:
            r = self.client.post(path, body, timeout=30)
        except httpx.HTTPError as exc:
            answer.error = f"{type(exc).__name__}: {exc}"
            return answer
        answer.status = r.status_code
        answer.retry_after = r.headers.get("retry-after")
        try:
            answer.body = r.json()
        except ValueError:
            answer.body = r.text
        return answer

    def loop(self, worker: int) -> None:
        n = 0
        last_run = 0.0
        while not self.stop.is_set():
            n += 1
            # Thread 0 tries a Run every RUN_EVERY seconds (before, during and after the
            # outage) until MAX_NEW_RUNS were accepted; everything else is Task/Detail.
            if (
                worker == 0
                and time.monotonic() - last_run >= RUN_EVERY
                and len(self.new_tasks) < MAX_NEW_RUNS
            ):
                last_run = time.monotonic()
                body = {**SMALL, "seed": str(1000 + n)}
                answer = self._one("run", f"/v1/Run/{CARTOON}", body)
                if answer.acceptable() and answer.status == 200:
                    with self.lock:
                        self.new_tasks.append(str(answer.body["taskid"]))
            else:
                answer = self._one("detail", "/v1/Task/Detail", {"taskid": self.watch})
            with self.lock:
                self.answers.append(answer)
            time.sleep(0.01)

    def ok_since(self, t: float) -> int:
        with self.lock:
            return sum(1 for a in self.answers if a.at > t and a.status == 200 and a.acceptable())


@pytest.fixture
def pg() -> Iterator[PgServer]:
    with PgServer() as server:
        yield server


def test_postgres_restart_mid_run_loses_nothing(pg: PgServer, tmp_path: Path) -> None:
    srv = Server(
        tmp_path / "srv",
        pg.create_database("toonforge"),
        workers=1,
        # A task whose worker lost its lease is taken again soon rather than after 30 s.
        TOONFORGE_LEASE_SECONDS="6",
        TOONFORGE_HEARTBEAT_SECONDS="1",
    )
    srv.create_keys()
    srv.start()
    threads: list[threading.Thread] = []
    hammer: Hammer | None = None
    try:
        c = Client(srv.url, srv.keys)
        running = c.run(CARTOON, RUNNING)["taskid"]
        queued = [c.run(CARTOON, {**SMALL, "seed": str(i)})["taskid"] for i in range(QUEUED)]
        c.wait(running, until=("task_output",), timeout=180)

        hammer = Hammer(Client(srv.url, srv.keys), watch=running)
        threads = [threading.Thread(target=hammer.loop, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        outage_start = time.monotonic()
        pg.stop()
        time.sleep(DOWN_SECONDS)
        pg.start()
        back = time.monotonic()
        # Hammer on until the API has answered well for a while after the restart.
        deadline = back + 120
        while time.monotonic() < deadline and hammer.ok_since(back + 2.0) < 50:
            time.sleep(0.2)
        hammer.stop.set()
        for t in threads:
            t.join(60)

        answers = hammer.answers
        during = [a for a in answers if outage_start <= a.at <= back + 1.0]
        bad = [a for a in answers if not a.acceptable()]
        summary = {
            "answers": len(answers),
            "during_outage": len(during),
            "by_status": _count(answers),
            "bad_examples": [vars(a) for a in bad[:5]],
        }
        assert {a.kind for a in during} == {"detail", "run"}, f"outage not covered: {summary}"
        # Everything is checked before asserting, so that one run tells the whole story.
        problems: list[str] = []
        if bad:
            problems.append(f"answers that are neither 200 nor a clean 503: {summary}")
        if hammer.ok_since(back + 2.0) < 50:
            problems.append(f"the API did not recover: {summary}")

        # Every task that was running, queued or accepted meanwhile ends in success.
        for taskid in [running, *queued, *hammer.new_tasks]:
            task = c.wait(taskid, timeout=300)
            if task["status"] != "task_postprocess_end" or task["pexit"] != "0":
                problems.append(
                    f"task {taskid} lost: {task['status']} pexit={task['pexit']!r} "
                    f"{task['debugerror']!r}"
                )
        # The worker reconnected: new work runs.
        last = c.wait(c.run(CARTOON, {**SMALL, "seed": "99"})["taskid"])
        if last["pexit"] != "0":
            problems.append(f"a task after the outage failed: {last['debugerror']!r}")
        assert not problems, "\n".join(problems)
    finally:
        if hammer is not None:
            hammer.stop.set()
        for t in threads:
            t.join(60)
        srv.stop()


def _count(answers: list[Answer]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in answers:
        key = f"{a.kind} {a.status if a.error is None else 'transport error'}"
        counts[key] = counts.get(key, 0) + 1
    return counts

"""Run with `Prefer: wait=N`: the finished task in the answer when it ends in time, the
usual answer otherwise (no worker runs in this tier: tasks stay queued unless cancelled)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from toonforge.api.run_wait import MAX_WAIT_SECONDS, wait_preference
from toonforge.testing import SMALL, InProcess

RUN = "/v1/Run/futurist/CartoonMix%20v1.0"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("wait=5", 5.0),
        ("wait=0.5", 0.5),
        ("respond-async, wait=10", 10.0),
        ('WAIT="7"', 7.0),
        ("wait", MAX_WAIT_SECONDS),
        ("wait=3600", MAX_WAIT_SECONDS),
        ("wait=0", None),
        ("wait=-1", None),
        ("wait=soon", None),
        ("wait=nan", None),
        ("return=minimal", None),
        ("", None),
        (None, None),
    ],
)
def test_wait_preference(header: str | None, seconds: float | None) -> None:
    assert wait_preference(header) == seconds


def test_without_the_header_the_answer_is_the_usual_one(inproc: InProcess) -> None:
    r = inproc.client.post(RUN, SMALL)
    assert r.status_code == 200 and "Preference-Applied" not in r.headers
    assert set(r.json()) == {"result", "errors", "taskid", "socketaccesstoken"}


def test_a_task_still_running_after_the_wait_gets_the_usual_answer(inproc: InProcess) -> None:
    started = time.monotonic()
    r = inproc.client.post(RUN, SMALL, headers={"Prefer": "wait=1"})
    elapsed = time.monotonic() - started
    data = r.json()
    assert r.status_code == 200 and data["result"] is True, data
    assert r.headers["Preference-Applied"] == "wait=1"
    assert "tasklist" not in data and data["taskid"] and data["socketaccesstoken"]
    assert elapsed >= 1.0
    detail = inproc.client.ok("/v1/Task/Detail", {"taskid": data["taskid"]})
    assert detail["tasklist"][0]["status"] == "task_queue"


def test_a_task_that_ends_during_the_wait_comes_back_finished(inproc: InProcess) -> None:
    """While Run waits, the task is cancelled by another request: the waiting Run is woken
    and answers with the task's record as Task/Detail gives it."""
    answer: dict[str, Any] = {}

    def run() -> None:
        answer["response"] = inproc.client.post(RUN, SMALL, headers={"Prefer": "wait=30"})

    waiter = threading.Thread(target=run)
    started = time.monotonic()
    waiter.start()
    listed: list[dict[str, Any]] = []
    while not listed and time.monotonic() - started < 10:
        listed = inproc.client.ok("/v1/Task/List", {})["tasklist"]
        time.sleep(0.05)
    assert listed, "the task was not queued"
    inproc.client.ok("/v1/Task/Cancel", {"taskid": listed[0]["id"]})
    waiter.join(timeout=30)
    elapsed = time.monotonic() - started
    data = answer["response"].json()
    assert data["result"] is True and data["taskid"] == listed[0]["id"], data
    (task,) = data["tasklist"]
    assert task["status"] == "task_cancel" and task["id"] == data["taskid"]
    detail = inproc.client.ok("/v1/Task/Detail", {"taskid": data["taskid"]})["tasklist"][0]
    assert task == detail
    assert elapsed < 25, "the waiting Run was not woken by the task's end"


def test_a_refused_run_does_not_wait(inproc: InProcess) -> None:
    started = time.monotonic()
    r = inproc.client.post(RUN, {**SMALL, "steps": 0}, headers={"Prefer": "wait=20"})
    data = r.json()
    assert data["result"] is False and "[steps]" in data["errors"][0]["message"]
    assert time.monotonic() - started < 15

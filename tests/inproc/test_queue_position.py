"""Where is my task: the queue fields of Task/Detail, Task/List and the WebSocket (no worker
runs in this tier, so tasks stay queued)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import update

from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Task, WorkerRecord
from toonforge.testing import InProcess

CARTOON = "/v1/Run/futurist/CartoonMix%20v1.0"


def _detail(inproc: InProcess, taskid: str) -> dict[str, Any]:
    return inproc.client.ok("/v1/Task/Detail", {"taskid": taskid})["tasklist"][0]


def _finish(inproc: InProcess, taskid: str, seconds: float) -> None:
    """Mark a queued task as a successful run of `seconds` (what a worker records)."""
    t = time.time()
    with inproc.services.sessions() as session:
        session.execute(
            update(Task)
            .where(Task.id == int(taskid))
            .values(status=lc.POSTPROCESS_END, pexit="0", starttime=t - seconds, endtime=t)
        )
        session.commit()


def _worker_seen(inproc: InProcess, worker_id: str, seen: float) -> None:
    with inproc.services.sessions() as session:
        session.add(
            WorkerRecord(
                id=worker_id,
                host="h",
                pid=1,
                device="cpu",
                started_at=seen,
                heartbeat_at=seen,
                tools=[],
                loaded=[],
                status="idle",
            )
        )
        session.commit()


def test_position_counts_the_queued_tasks_ahead(inproc: InProcess) -> None:
    ids = [inproc.client.ok(CARTOON, {"samples": 1})["taskid"] for _ in range(3)]
    third = _detail(inproc, ids[2])
    assert third["queueposition"] == "3"
    assert third["estimatedstarttime"] == "0"  # no worker is live
    assert _detail(inproc, ids[0])["queueposition"] == "1"
    inproc.client.ok("/v1/Task/Cancel", {"taskid": ids[0]})
    assert _detail(inproc, ids[2])["queueposition"] == "2"
    cancelled = _detail(inproc, ids[0])
    assert (cancelled["queueposition"], cancelled["estimatedstarttime"]) == ("0", "0")
    listed = inproc.client.ok("/v1/Task/List", {"order": "ASC"})["tasklist"]
    assert [t["queueposition"] for t in listed] == ["0", "1", "2"]


def test_estimate_shares_the_work_ahead_among_live_workers(inproc: InProcess) -> None:
    done = inproc.client.ok(CARTOON, {"samples": 1})["taskid"]
    _finish(inproc, done, 40.0)  # the tool's typical run: 40 s
    ids = [inproc.client.ok(CARTOON, {"samples": 1})["taskid"] for _ in range(3)]
    # A worker that has not been seen for long does not count.
    _worker_seen(inproc, "gone", time.time() - 3600)
    assert _detail(inproc, ids[2])["estimatedstarttime"] == "0"
    _worker_seen(inproc, "w1", time.time())
    before = time.time()
    third = _detail(inproc, ids[2])
    assert third["queueposition"] == "3"
    # Two tasks of 40 s ahead, one worker: about 80 s from now.
    assert abs(int(third["estimatedstarttime"]) - (before + 80)) <= 2
    _worker_seen(inproc, "w2", time.time())
    halved = int(_detail(inproc, ids[2])["estimatedstarttime"])
    assert abs(halved - (time.time() + 40)) <= 2
    # A tool that never ran here has no estimate.
    other = inproc.client.ok("/v1/Run/wiro/animate-diff", {})["taskid"]
    assert _detail(inproc, other)["estimatedstarttime"] == "0"
    assert _detail(inproc, other)["queueposition"] == "4"


def test_socket_frames_of_a_queued_task_follow_its_place(inproc: InProcess) -> None:
    runs = [inproc.client.ok(CARTOON, {"samples": 1}) for _ in range(3)]
    with inproc.http.websocket_connect("/v1/socket") as ws:
        ws.send_json({"type": "task_info", "tasktoken": runs[2]["socketaccesstoken"]})
        first = ws.receive_json()
        assert first["type"] == lc.QUEUE
        assert (first["queueposition"], first["estimatedstarttime"]) == ("3", "0")
        inproc.client.ok("/v1/Task/Cancel", {"taskid": runs[0]["taskid"]})
        moved = ws.receive_json()
        assert moved["type"] == lc.QUEUE and moved["queueposition"] == "2"
        assert moved["tasktoken"] == runs[2]["socketaccesstoken"]
        # Its own cancel ends the stream: no queue frame comes after it.
        inproc.client.ok("/v1/Task/Cancel", {"taskid": runs[2]["taskid"]})
        last = ws.receive_json()
        assert last["type"] == lc.CANCEL and "queueposition" not in last

"""Statuses, WebSocket, Kill, Cancel and model failures, through a real server."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from websockets.sync.client import connect

from support import CARTOON, SMALL, Client, Server, workers_paused

# Long enough on the tiny model to be caught mid-run.
SLOW = {**SMALL, "steps": 150, "width": 256, "height": 256, "samples": 2}
LIFECYCLE = [
    "task_queue",
    "task_accept",
    "task_preprocess_start",
    "task_preprocess_end",
    "task_assign",
    "task_start",
    "task_output",
    "task_output_full",
    "task_end",
    "task_postprocess_start",
    "task_postprocess_end",
]


def socket_frames(server: Server, token: str, timeout: float = 120) -> list[dict[str, Any]]:
    ws_url = server.url.replace("http", "ws", 1) + "/v1/socket"
    frames = []
    with connect(ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "task_info", "tasktoken": token}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = json.loads(ws.recv(timeout=timeout))
            frames.append(frame)
            if frame["type"] in ("task_postprocess_end", "task_cancel"):
                break
    return frames


def test_websocket_walks_every_status_in_order(server: Server, client: Client) -> None:
    data = client.run(CARTOON, {**SMALL, "steps": 4})
    frames = socket_frames(server, data["socketaccesstoken"])
    types = [f["type"] for f in frames]
    assert types[-1] == "task_postprocess_end"
    # The first frame is the state the task was in when we registered; from there on every
    # status follows in lifecycle order.
    first = LIFECYCLE.index(types[0])
    expected_rest = [t for t in LIFECYCLE[first:] if t != "task_output"]
    # task_queue repeats (with the new queueposition) while tasks ahead leave the queue,
    # always before task_accept; task_output repeats per step.
    if "task_queue" in types:
        last_queue = max(i for i, t in enumerate(types) if t == "task_queue")
        assert types.index("task_accept") > last_queue
    lifecycle = [t for t in types if t != "task_output"]
    lifecycle = [t for i, t in enumerate(lifecycle) if i == 0 or t != lifecycle[i - 1]]
    assert lifecycle == expected_rest
    for f in frames:
        assert f["id"] == data["taskid"] and f["tasktoken"] == data["socketaccesstoken"]
        assert f["result"] is True
    progress = [f["message"] for f in frames if f["type"] == "task_output"]
    if types[0] in LIFECYCLE[:6]:
        assert [p["stepCurrent"] for p in progress] == ["1", "2", "3", "4"]
    for p in progress:
        assert p["type"] == "progressGenerate" and p["task"] == "Generate"
        assert p["stepTotal"] == "4" and p["speedType"] in ("it/s", "s/it")
        assert set(p) == {
            "type",
            "task",
            "percentage",
            "stepCurrent",
            "stepTotal",
            "speed",
            "speedType",
            "elapsedTime",
            "remainingTime",
        }
    outputs = frames[-1]["message"]
    assert [o["name"] for o in outputs] == ["0.png"]


def test_late_websocket_gets_current_state(server: Server, client: Client) -> None:
    data = client.run(CARTOON, SMALL)
    client.wait(data["taskid"])
    frames = socket_frames(server, data["socketaccesstoken"], timeout=10)
    assert [f["type"] for f in frames] == ["task_postprocess_end"]
    assert frames[0]["message"][0]["name"] == "0.png"


def test_websocket_unknown_token(server: Server) -> None:
    ws_url = server.url.replace("http", "ws", 1) + "/v1/socket"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "task_info", "tasktoken": "nope"}))
        frame = json.loads(ws.recv(timeout=10))
    assert frame["result"] is False


def test_kill_mid_run(client: Client) -> None:
    data = client.run(CARTOON, SLOW)
    client.wait(data["taskid"], until=("task_output",), timeout=120)
    r = client.post("/v1/Task/Kill", {"socketaccesstoken": data["socketaccesstoken"]}).json()
    assert r["result"] is True, r
    task = client.wait(data["taskid"], timeout=60)
    assert task["status"] == "task_cancel"
    assert task["outputs"] == [] and task["totalcost"] == "0"
    assert task["canceltime"] != "0"
    # The worker goes on with the next task.
    after = client.wait(client.run(CARTOON, SMALL)["taskid"])
    assert after["pexit"] == "0"


def test_kill_a_finished_task_fails_clearly(client: Client) -> None:
    task = client.wait(client.run(CARTOON, SMALL)["taskid"])
    r = client.post("/v1/Task/Kill", {"taskid": task["id"]}).json()
    assert r["result"] is False
    assert r["errors"][0]["code"] == 1
    assert r["errors"][0]["message"].startswith("Task could not be killed: ")


def test_cancel_queued_and_not_running(make_server: Any) -> None:
    srv = make_server(workers=0)
    srv.start()
    c = Client(srv.url, srv.keys)
    data = c.run(CARTOON, SMALL)
    r = c.post("/v1/Task/Cancel", {"taskid": data["taskid"]}).json()
    assert r["result"] is True and r["tasklist"][0]["status"] == "task_cancel"
    again = c.post("/v1/Task/Cancel", {"taskid": data["taskid"]}).json()
    assert again["errors"] == [{"code": 1, "message": "Task is not in a cancellable state."}]
    # A cancelled task is never run, even once a worker comes.
    second = c.run(CARTOON, SMALL)
    worker = srv.spawn_worker()
    try:
        assert c.wait(second["taskid"])["pexit"] == "0"
        assert c.detail(data["taskid"])["status"] == "task_cancel"
        assert c.detail(data["taskid"])["starttime"] == "0"
    finally:
        worker.terminate()
        worker.wait(30)


def test_running_task_is_not_cancellable(server: Server, client: Client) -> None:
    data = client.run(CARTOON, SLOW)
    client.wait(data["taskid"], until=("task_output",), timeout=120)
    with workers_paused(server):  # still running, whatever the machine's speed
        r = client.post("/v1/Task/Cancel", {"taskid": data["taskid"]}).json()
    assert r["errors"][0] == {"code": 1, "message": "Task is not in a cancellable state."}
    assert "use Task/Kill" in r["errors"][1]["message"]
    client.post("/v1/Task/Kill", {"taskid": data["taskid"]})
    assert client.wait(data["taskid"])["status"] == "task_cancel"


def test_io_delete_refuses_running_task(server: Server, client: Client) -> None:
    data = client.run(CARTOON, SLOW)
    client.wait(data["taskid"], until=("task_output",), timeout=120)
    with workers_paused(server):
        r = client.post(
            "/v1/Task/InputOutputDelete", {"tasktoken": data["socketaccesstoken"]}
        ).json()
    assert r["errors"][0]["message"] == "Task must be completed or cancelled before deleting files"
    client.post("/v1/Task/Kill", {"taskid": data["taskid"]})
    client.wait(data["taskid"])


@pytest.mark.parametrize("tiny", ["false"])
def test_missing_real_weights_is_task_state_not_500(make_server: Any, tiny: str) -> None:
    # Not in offline mode and no weights on this machine: the model fails, the task says why,
    # and the worker goes on to the next task.
    srv = make_server(TOONFORGE_TINY=tiny)
    srv.start()
    c = Client(srv.url, srv.keys)
    first = c.run(CARTOON, SMALL)
    second = c.run(CARTOON, SMALL)
    for data in (first, second):
        task = c.wait(data["taskid"], timeout=120)
        assert task["status"] == "task_postprocess_end"
        assert task["pexit"] not in ("", "0")
        assert task["outputs"] == [] and task["totalcost"] == "0"
        assert "CartoonMix" in task["debugerror"] and ".safetensors" in task["debugerror"]
        assert "toonforge models pull" in task["debugerror"]

"""Workers that die, servers that restart: nothing is lost."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from support import CARTOON, SMALL, Client, Server

MEDIUM = {**SMALL, "steps": 40, "width": 256, "height": 256}
FAST_LEASE = {"TOONFORGE_LEASE_SECONDS": "2", "TOONFORGE_HEARTBEAT_SECONDS": "0.5"}


def kill_hard(proc: Any) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def run_and_kill_worker(srv: Server) -> tuple[Client, dict[str, Any], Any]:
    """Start a task on a worker, SIGKILL that worker mid-run, start another one."""
    srv.start()
    c = Client(srv.url, srv.keys)
    first = srv.spawn_worker()
    data = c.run(CARTOON, MEDIUM)
    c.wait(data["taskid"], until=("task_output",), timeout=120)
    kill_hard(first)
    return c, data, srv.spawn_worker()


def test_sigkilled_worker_loses_nothing(make_server: Any) -> None:
    c, data, second = run_and_kill_worker(make_server(workers=0, **FAST_LEASE))
    try:
        task = c.wait(data["taskid"], timeout=240)
        assert task["status"] == "task_postprocess_end" and task["pexit"] == "0", task
        assert [o["name"] for o in task["outputs"]] == ["0.png"]
    finally:
        second.terminate()
        second.wait(30)


def test_task_lost_too_often_ends_with_a_clear_error(make_server: Any) -> None:
    c, data, second = run_and_kill_worker(
        make_server(workers=0, TOONFORGE_MAX_ATTEMPTS="1", **FAST_LEASE)
    )
    try:
        task = c.wait(data["taskid"], timeout=120)
        assert task["status"] == "task_postprocess_end"
        assert task["pexit"] == "1"
        assert "stopped responding" in task["debugerror"]
        # The second worker is alive and serves new work.
        assert c.wait(c.run(CARTOON, SMALL)["taskid"])["pexit"] == "0"
    finally:
        second.terminate()
        second.wait(30)


def test_server_restarted_with_a_queue_finishes_it(make_server: Any) -> None:
    srv = make_server(workers=0)
    srv.start()
    c = Client(srv.url, srv.keys)
    ids = [c.run(CARTOON, {**SMALL, "seed": str(i)})["taskid"] for i in range(3)]
    srv.stop()
    srv.env["TOONFORGE_WORKERS"] = "1"
    srv.start()
    for taskid in ids:
        task = c.wait(taskid, timeout=180)
        assert task["pexit"] == "0", task


def test_sigterm_hands_the_running_task_back(make_server: Any) -> None:
    srv = make_server(workers=0, **FAST_LEASE)
    srv.start()
    c = Client(srv.url, srv.keys)
    first = srv.spawn_worker()
    data = c.run(CARTOON, MEDIUM)
    c.wait(data["taskid"], until=("task_output",), timeout=120)
    first.terminate()
    assert first.wait(60) == 0
    second = srv.spawn_worker()
    try:
        task = c.wait(data["taskid"], timeout=240)
        assert task["pexit"] == "0", task
    finally:
        second.terminate()
        second.wait(30)


def test_workers_stop_when_serve_is_killed(make_server: Any) -> None:
    """`serve` killed with SIGKILL (no chance to stop its workers): they notice and exit
    instead of running on as orphans."""
    srv = make_server(workers=1)
    srv.start()
    assert srv.proc is not None
    children = Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children").read_text().split()
    workers = [int(pid) for pid in children]
    assert workers, "serve started no worker"
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "a worker outlived its serve process"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its parent, init, reaps it)

"""`toonforge serve` as a process: signals, worker restarts, forwarded headers.

Each test runs a real `serve` subprocess (SQLite: these are about processes, not the
database) and stops it at the end.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import CARTOON, SMALL, Client, Server

# Long enough to be running when the signal comes (the hand-back happens between two steps).
LONG = {**SMALL, "steps": 100, "width": 128, "height": 128}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Servers of the test's own, each with a signature project; all stopped at the end."""
    servers: list[Server] = []

    def make(workers: int | str = 1, **env: str) -> Server:
        srv = Server(tmp_path / f"srv{len(servers)}", None, workers, **env)
        srv.create_keys()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        if srv.stop() is None or srv.proc is None:
            continue
        # Whatever a test did, no worker of these servers outlives it.
        for pid in _worker_pids(srv):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited


def _worker_pids(srv: Server) -> list[int]:
    """Every worker process this server's log says was ready."""
    return [int(pid) for pid, _device in _ready_lines(srv)]


def _ready_lines(srv: Server) -> list[tuple[str, str]]:
    """(pid, device) of every worker this server's log says was ready."""
    return re.findall(r"worker [^:\s]+:(\d+):\w+ on (\S+) ready for", srv.log())


def _wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def _ready_worker(srv: Server, timeout: float = 120) -> int:
    """The pid of serve's worker once it has said it is ready."""

    def ready() -> int | None:
        children = srv.children()
        ready = [pid for pid in _worker_pids(srv) if pid in children]
        return ready[0] if ready else None

    return int(_wait_for("a ready worker", ready, timeout))


def test_sigterm_stops_serve_cleanly_and_hands_the_running_task_back(
    serve: Callable[..., Server],
) -> None:
    srv = serve(workers=1)
    srv.start()
    assert srv.proc is not None
    c = Client(srv.url, srv.keys)
    worker = _ready_worker(srv)
    taskid = c.run(CARTOON, LONG)["taskid"]
    c.wait(taskid, until=("task_output",), timeout=120)

    srv.proc.send_signal(signal.SIGTERM)
    # serve's own shutdown ran: exit code 0, not death by the re-raised signal (-15).
    assert srv.proc.wait(timeout=60) == 0, srv.log()[-3000:]
    assert not _alive(worker), "the worker outlived serve"
    log = srv.log()
    assert f"task {taskid}: handed back to the queue" in log, log[-3000:]
    assert "serve: stopped" in log

    # The task went back to the queue (not lost, not left to a lease to expire): the next
    # server finishes it.
    srv.start()
    task = c.wait(taskid, timeout=300)
    assert task["status"] == "task_postprocess_end" and task["pexit"] == "0", task


def test_sigint_stops_serve_with_exit_code_0(serve: Callable[..., Server]) -> None:
    srv = serve(workers=1)
    srv.start()
    assert srv.proc is not None
    worker = _ready_worker(srv)
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(timeout=60) == 0, srv.log()[-3000:]
    assert not _alive(worker)


def test_a_worker_killed_after_it_was_ready_is_replaced_at_once(
    serve: Callable[..., Server],
) -> None:
    srv = serve(workers=1)
    srv.start()
    c = Client(srv.url, srv.keys)
    # Killed four times in a row: a start-up back-off (1, 2, 4, 8 s) would leave the last
    # gap far beyond the deadline below; a ready worker's death costs no wait at all.
    for _ in range(4):
        pid = _ready_worker(srv)
        os.kill(pid, signal.SIGKILL)
        _wait_for(
            f"a new worker after {pid} was killed",
            lambda pid=pid: [p for p in srv.children() if p != pid],  # type: ignore[misc]
            timeout=6,
        )
    assert "before it was ready" not in srv.log()
    assert srv.log().count("restarting it now") == 4
    # The replacement works.
    _ready_worker(srv)
    task = c.wait(c.run(CARTOON, SMALL)["taskid"], timeout=300)
    assert task["pexit"] == "0", task


def test_a_worker_that_never_gets_ready_is_restarted_with_a_growing_delay(
    serve: Callable[..., Server],
) -> None:
    # No CUDA on the test machines: the worker dies while starting, every time.
    srv = serve(workers=1, TOONFORGE_DEVICE="cuda")
    srv.start()
    _wait_for(
        "a third start-up failure",
        lambda: "before it was ready (3 time(s) in a row); restarting in 4s" in srv.log(),
        timeout=180,
    )
    log = srv.log()
    assert "(1 time(s) in a row); restarting in 1s" in log
    assert "(2 time(s) in a row); restarting in 2s" in log
    # The API is unaffected.
    c = Client(srv.url, srv.keys)
    assert c.run(CARTOON, SMALL)["result"] is True


def _run_from(srv: Server, keys: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
    c = Client(srv.url, keys)
    r = c.post(f"/v1/Run/{CARTOON}", SMALL, headers=headers)
    return r.status_code, r.json()


def test_forwarded_for_from_loopback_is_ignored_by_default(serve: Callable[..., Server]) -> None:
    srv = serve(workers=0)
    only_lab = srv.create_keys(allow_ip="10.1.2.3")
    srv.start()
    status, body = _run_from(srv, only_lab, **{"X-Forwarded-For": "10.1.2.3"})
    assert status == 401 and body["result"] is False, body
    assert "127.0.0.1 is not allowed" in body["errors"][0]["message"]
    # The project without an allow-list is served as before.
    assert _run_from(srv, srv.keys)[0] == 200


def test_forwarded_for_from_a_trusted_proxy_is_honoured(serve: Callable[..., Server]) -> None:
    srv = serve(workers=0, TOONFORGE_TRUSTED_PROXIES="127.0.0.1")
    only_lab = srv.create_keys(allow_ip="10.1.2.3")
    srv.start()
    status, body = _run_from(srv, only_lab, **{"X-Forwarded-For": "10.1.2.3"})
    assert status == 200 and body["result"] is True, body
    status, body = _run_from(srv, only_lab, **{"X-Forwarded-For": "10.9.9.9"})
    assert status == 401 and "10.9.9.9 is not allowed" in body["errors"][0]["message"], body
    status, body = _run_from(srv, only_lab)
    assert status == 401, body


def test_trusted_proxies_are_addresses_or_networks() -> None:
    from pydantic import ValidationError

    from toonforge.settings import load_settings

    assert load_settings(trusted_proxies="").trusted_proxy_list == []
    assert load_settings(trusted_proxies="127.0.0.1, 10.0.0.0/8,::1").trusted_proxy_list == [
        "127.0.0.1",
        "10.0.0.0/8",
        "::1",
    ]
    with pytest.raises(ValidationError, match="not an address or CIDR"):
        load_settings(trusted_proxies="127.0.0.1,proxy.local")


def test_several_api_processes_serve_one_port_and_stop_cleanly(
    serve: Callable[..., Server],
) -> None:
    """The default of two API processes: both answer on the one port, a task runs through
    them, and SIGTERM stops everything with exit code 0."""
    srv = serve(workers=1, TOONFORGE_API_PROCESSES="2")
    srv.start()
    assert srv.proc is not None
    c = Client(srv.url, srv.keys)
    task = c.wait(c.run(CARTOON, SMALL)["taskid"], timeout=300)
    assert task["pexit"] == "0", task
    # Two API processes and one worker under serve (and multiprocessing's helper process).
    _wait_for("three children", lambda: len(srv.children()) >= 3, timeout=30)
    children = srv.children()
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=60) == 0, srv.log()[-3000:]
    _wait_for("every child gone", lambda: not any(_alive(p) for p in children), timeout=30)


def test_devices_cpu_cpu_starts_two_workers_each_on_its_own_device(
    serve: Callable[..., Server],
) -> None:
    # Toon Renders is placed on a GPU this machine does not have: neither worker takes it.
    srv = serve(
        workers="auto",
        TOONFORGE_DEVICES="cpu,cpu",
        TOONFORGE_TOOL_DEVICES="WizardWhitebeard/*=cuda:1",
    ).start()

    def two_ready() -> list[tuple[str, str]]:
        lines = [(p, d) for p, d in _ready_lines(srv) if int(p) in srv.children()]
        return lines if len(lines) == 2 else []

    lines = _wait_for("two ready workers", two_ready, 120)
    assert sorted(d for _p, d in lines) == ["cpu", "cpu"]
    assert len({p for p, _d in lines}) == 2
    assert "2 worker(s) on cpu, cpu" in srv.log()
    ready_for = re.findall(r"on cpu ready for: (.*)", srv.log())
    assert ready_for and all("futurist/CartoonMix v1.0" in t for t in ready_for)
    assert not any("Toon-Renders" in t for t in ready_for)

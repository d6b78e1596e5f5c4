"""Operations endpoints in process: /healthz, /readyz (no live worker, a live worker, a
database that is down), /metrics (queue depth, task durations, workers and what they hold,
HTTP requests by route template) and the optional metrics token."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from toonforge.services import Services
from toonforge.testing import (
    SMALL,
    InProcess,
    SignedClient,
    in_process_app,
    new_project,
    settings_for_test,
)

RUN = "/v1/Run/futurist/CartoonMix%20v1.0"
TERMINAL = ("task_postprocess_end", "task_cancel")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(http: Any, **headers: str) -> Samples:
    r = http.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def cartoon_key(services: Services) -> str:
    manifest = services.catalog.find("futurist", "cartoonmix-v1-0")
    assert manifest is not None
    return manifest.key


@contextmanager
def live_worker(services: Services) -> Iterator[Any]:
    """A real worker (tiny weights) in a thread of this process, stopped at the end."""
    from toonforge.engine.runtime import EngineRuntime
    from toonforge.worker.main import Worker

    worker = Worker(services, EngineRuntime(services.settings))
    ready = threading.Event()
    thread = threading.Thread(
        target=worker.run_forever, kwargs={"on_ready": ready.set}, daemon=True
    )
    thread.start()
    assert ready.wait(120), "the worker did not start"
    try:
        yield worker
    finally:
        worker.stopping.set()
        worker.wake.set()
        thread.join(60)
        assert not thread.is_alive()


@pytest.fixture
def ops_app(tmp_path: Path, backend: str, database_factory: Any) -> Iterator[InProcess]:
    """The app in process with the tiny weights the tests share and a quick heartbeat."""
    tiny = os.environ.get("TOONFORGE_TEST_TINY_DIR")
    settings = settings_for_test(
        tmp_path / "data",
        database_factory(backend),
        tiny_dir=Path(tiny) if tiny else None,
        heartbeat_seconds=0.5,
    )
    with in_process_app(settings, dispatch_callbacks=False) as (http, services):
        keys = new_project(services)
        yield InProcess(http, services, keys, SignedClient(http, keys))


def wait_terminal(client: SignedClient, taskid: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [task] = client.ok("/v1/Task/Detail", {"taskid": taskid})["tasklist"]
        if task["status"] in TERMINAL:
            return dict(task)
        time.sleep(0.1)
    raise AssertionError(f"task {taskid} did not end in {timeout}s")


def test_healthz_is_alive(inproc: InProcess) -> None:
    r = inproc.http.get("/healthz")
    assert r.status_code == 200 and r.json()["result"] is True


def test_not_ready_without_a_live_worker(inproc: InProcess) -> None:
    r = inproc.http.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["storage"] == {"ok": True}
    assert body["checks"]["workers"]["ok"] is False
    assert "no live worker" in body["checks"]["workers"]["error"]
    tool = cartoon_key(inproc.services)
    assert body["tools"][tool] == {"ready": False, "workers": 0}


def test_ready_with_a_worker_and_metrics_follow_the_tasks(ops_app: InProcess) -> None:
    http, services, client = ops_app.http, ops_app.services, ops_app.client
    tool = cartoon_key(services)
    before = scrape(http)
    assert value(before, "toonforge_database_up") == 1
    assert value(before, "toonforge_queue_depth", tool=tool) == 0
    assert value(before, "toonforge_workers_live") == 0

    # Queued with no worker: the depth rises with each task.
    taskids = []
    for depth in (1, 2, 3):
        taskids.append(client.ok(RUN, SMALL)["taskid"])
        assert value(scrape(http), "toonforge_queue_depth", tool=tool) == depth
    # One cancelled while queued: counted as such, and no longer waiting.
    client.ok("/v1/Task/Cancel", {"taskid": taskids.pop()})
    samples = scrape(http)
    assert value(samples, "toonforge_queue_depth", tool=tool) == 2
    assert value(samples, "toonforge_tasks_ended_total", tool=tool, outcome="cancelled") == 1

    with live_worker(services) as worker:
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.json()
        body = ready.json()
        assert body["ready"] is True and body["checks"]["workers"] == {"ok": True, "live": 1}
        assert body["tools"][tool] == {"ready": True, "workers": 1}

        for taskid in taskids:
            assert wait_terminal(client, taskid)["pexit"] == "0"
        # The worker publishes what it loaded right after a task (no full heartbeat wait).
        deadline = time.monotonic() + 10
        while True:
            samples = scrape(http)
            loaded = value(samples, "toonforge_worker_loaded_bytes", worker=worker.worker_id)
            if loaded > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert loaded > 0
        parts = [
            dict(ls)["part"]
            for (n, ls), _v in samples.items()
            if n == "toonforge_worker_loaded_bytes"
        ]
        assert parts and all(str(services.settings.data_dir) not in p for p in parts)
        assert value(samples, "toonforge_workers_live") == 1
        assert value(samples, "toonforge_worker_info", worker=worker.worker_id) == 1
        assert value(samples, "toonforge_tool_live_workers", tool=tool) == 1
        assert value(samples, "toonforge_queue_depth", tool=tool) == 0
        assert value(samples, "toonforge_tasks_running", tool=tool) == 0
        labels = {"tool": tool, "outcome": "succeeded"}
        assert value(samples, "toonforge_task_duration_seconds_count", **labels) == 2
        assert value(samples, "toonforge_task_duration_seconds_sum", **labels) > 0
        assert value(samples, "toonforge_task_duration_seconds_bucket", le="+Inf", **labels) == 2
        assert value(samples, "toonforge_tasks_ended_total", **labels) == 2
        assert value(samples, "toonforge_task_batch_size_count", tool=tool) == 2
        # Queued together, the two may have run as one batch of 2 (or one after the other).
        assert value(samples, "toonforge_task_batch_size_bucket", tool=tool, le="2") == 2
        assert value(samples, "toonforge_task_failures_total", tool=tool) == 0

        # The worker's row, as `toonforge models status` and other hosts see it.
        from toonforge.tasks.workers import live_workers

        with services.read_sessions() as session:
            [row] = live_workers(session, services.settings.heartbeat_seconds)
        assert row.id == worker.worker_id and row.pid == os.getpid()
        assert tool in row.tools and row.loaded and row.device == "cpu"
        from toonforge.cli.models_cmd import loaded_parts

        parts_seen = loaded_parts(services.settings)  # what `toonforge models status` lists
        assert parts_seen and {p["host"] for p in parts_seen} == {row.host}
        assert all(tool in p["tools"] for p in parts_seen)

    # Stopped: its row says so at once, and the server is no longer ready.
    r = http.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["workers"]["live"] == 0
    assert value(scrape(http), "toonforge_workers_live") == 0


def test_http_requests_are_counted_by_route_template(inproc: InProcess) -> None:
    http = inproc.http
    inproc.client.post("/v1/Task/Detail", {"taskid": "424242"})
    for name in ("a.png", "b.png", "c.png"):
        assert http.get(f"/v1/File/nokey{name}/{name}").status_code == 404
    assert http.get("/no/such/route/at/all").status_code == 404
    samples = scrape(http)
    total = "toonforge_http_requests_total"
    assert value(samples, total, route="/v1/Task/Detail", method="POST", status="200") == 1
    assert value(samples, total, route="/v1/File/{accesskey}/{name}", status="404") == 3
    assert value(samples, total, route="<unmatched>", status="404") == 1
    routes = {dict(ls)["route"] for (n, ls), _v in samples.items() if n == total}
    assert not any("png" in route or "no/such" in route for route in routes), routes
    count = "toonforge_http_request_duration_seconds_count"
    assert value(samples, count, route="/v1/File/{accesskey}/{name}") == 3


def test_metrics_token_when_set(tmp_path: Path) -> None:
    settings = settings_for_test(tmp_path / "data", metrics_token="s3cret")
    with in_process_app(settings, dispatch_callbacks=False) as (http, _services):
        for path in ("/metrics", "/readyz"):
            refused = http.get(path)
            assert refused.status_code == 401 and refused.json()["result"] is False
            assert http.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/healthz").status_code == 200
        samples = scrape(http, Authorization="Bearer s3cret")
        assert value(samples, "toonforge_database_up") == 1
        assert http.get("/readyz", headers={"Authorization": "Bearer s3cret"}).status_code == 503


@pytest.mark.postgres
def test_database_down_is_not_ready_and_says_why(tmp_path: Path) -> None:
    from pgserver import PgServer

    with PgServer() as pg:
        settings = settings_for_test(tmp_path / "data", pg.create_database("ops"))
        with in_process_app(settings, dispatch_callbacks=False) as (http, _services):
            assert http.get("/readyz").json()["checks"]["database"] == {"ok": True}
            pg.stop()
            r = http.get("/readyz")
            assert r.status_code == 503
            body = r.json()
            assert body["ready"] is False
            assert body["checks"]["database"]["ok"] is False
            assert "database cannot be reached" in body["checks"]["database"]["error"]
            assert body["checks"]["workers"]["ok"] is False
            assert body["checks"]["storage"] == {"ok": True}
            # Alive all the same, and the metrics page says the database is down.
            assert http.get("/healthz").status_code == 200
            samples = scrape(http)
            assert value(samples, "toonforge_database_up") == 0
            pg.start()
            assert http.get("/readyz").json()["checks"]["database"] == {"ok": True}


def test_request_log_lines_carry_the_project_and_task(inproc: InProcess) -> None:
    """A line logged while a request is handled, in the route's thread, carries the
    project (known from the headers) and the task (once queued), in JSON mode."""
    import json
    import logging

    from toonforge.ops.logging import ContextFilter, JsonFormatter

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("toonforge.api")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        taskid = inproc.client.ok(RUN, SMALL)["taskid"]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    docs = [json.loads(line) for line in lines]
    queued = [d for d in docs if d["message"].startswith(f"task {taskid} queued")]
    assert len(queued) == 1, docs
    [doc] = queued
    assert doc["task_id"] == int(taskid)
    assert doc["project_id"] == inproc.keys.projectid
    assert doc["level"] == "DEBUG" and doc["logger"] == "toonforge.api"
    assert doc["time"].endswith("Z")


def test_lost_workers_tasks_count_as_failed_and_killed(inproc: InProcess) -> None:
    """Tasks whose worker was lost end through the reaper: one past its attempts (failed),
    one with a kill requested (killed); both are counted, with their run time."""
    from toonforge.tasks.store import claim, reap, request_kill

    services, client = inproc.services, inproc.client
    tool = cartoon_key(services)
    # Its callback goes to a loopback address, which this server refuses to call.
    first = client.ok(RUN, {**SMALL, "callbackUrl": "http://127.0.0.1:9/hook"})["taskid"]
    second = client.ok(RUN, SMALL)["taskid"]
    with services.sessions() as session:
        for _ in range(2):  # taken by a worker that then vanished (its lease already over)
            task = claim(
                session, worker_id="gone", tool_keys=[tool], lease_seconds=-1, max_attempts=1
            )
            assert task is not None
            if str(task.id) == second:
                assert request_kill(session, task) is None
        session.commit()
    with services.sessions() as session:
        ended = reap(session, max_attempts=1)
        session.commit()
    assert sorted(ended) == sorted([int(first), int(second)])
    samples = scrape(inproc.http)
    assert value(samples, "toonforge_task_failures_total", tool=tool) == 1
    assert value(samples, "toonforge_task_kills_total", tool=tool) == 1
    for outcome in ("failed", "killed"):
        labels = {"tool": tool, "outcome": outcome}
        assert value(samples, "toonforge_task_duration_seconds_count", **labels) == 1
        assert value(samples, "toonforge_tasks_ended_total", **labels) == 1
    assert value(samples, "toonforge_tasks_running", tool=tool) == 0
    assert value(samples, "toonforge_task_batch_size_count", tool=tool) == 0
    assert value(samples, "toonforge_callback_deliveries_pending") == 1

    from toonforge.callbacks.dispatcher import CallbackDispatcher

    assert CallbackDispatcher(services).run_once()
    samples = scrape(inproc.http)
    assert value(samples, "toonforge_callback_deliveries_pending") == 0
    assert value(samples, "toonforge_callback_deliveries_total", state="refused") == 1
    assert value(samples, "toonforge_callback_deliveries_total", state="delivered") == 0

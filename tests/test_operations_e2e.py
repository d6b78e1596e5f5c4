"""A real `toonforge serve` with two API processes on one port, JSON logs and one worker:
/readyz turns ready once the worker's heartbeat is in, /metrics adds up the requests both
API processes answered, and every log line (toonforge's, uvicorn's, the worker's) is one
JSON object, a task's lines carrying its task_id and project_id."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support import CARTOON, SMALL, Client, Server, run_ok

REQUESTS = 24


def _counter(text: str, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and wanted <= set(s.labels.items())
    )


def _wait_ready(url: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = httpx.get(url + "/readyz", timeout=10)
        body = r.json()
        if r.status_code == 200:
            return body
        assert r.status_code == 503 and body["ready"] is False
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout}s: {body}")


def test_two_api_processes_json_logs_and_metrics(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "srv",
        None,
        1,
        TOONFORGE_API_PROCESSES="2",
        TOONFORGE_LOG_FORMAT="json",
        TOONFORGE_HEARTBEAT_SECONDS="1",
    )
    keys = server.create_keys()
    try:
        server.start()
        body = _wait_ready(server.url)
        assert body["checks"]["workers"]["live"] == 1
        client = Client(server.url, keys)
        task = run_ok(client, CARTOON, SMALL)
        taskid = int(task["id"])

        # Each on a new connection: the two processes share the accepts.
        for _ in range(REQUESTS):
            r = httpx.post(
                server.url + "/v1/Tool/Detail",
                json={"slugowner": "futurist", "slugproject": "cartoonmix-v1-0"},
                timeout=30,
            )
            assert r.status_code == 200
        counts = set()
        for _ in range(6):  # whichever process answers the scrape sees both processes' counts
            page = httpx.get(server.url + "/metrics", timeout=30)
            assert page.status_code == 200
            counts.add(
                _counter(
                    page.text,
                    "toonforge_http_requests_total",
                    route="/v1/Tool/Detail",
                    status="200",
                )
            )
            duration = _counter(
                page.text,
                "toonforge_task_duration_seconds_count",
                outcome="succeeded",
            )
            assert duration == 1
        assert counts == {REQUESTS}
        files = list((server.data_dir / "state" / "prometheus").glob("counter_*.db"))
        assert len(files) >= 2, files  # two API processes counted
    finally:
        server.stop()

    # Every line, the model libraries' included: one JSON object.
    docs = []
    for line in server.log().splitlines():
        if line.strip():
            doc = json.loads(line)
            assert {"time", "level", "logger", "message"} <= set(doc), doc
            docs.append(doc)
    loggers = {d["logger"] for d in docs}
    assert "uvicorn.error" in loggers, loggers  # uvicorn's own lines go through it too
    assert "uvicorn.access" not in loggers, loggers  # the access log stays off by default
    assert "toonforge.worker" in loggers, loggers
    about_task = [d for d in docs if f"task {taskid}" in d["message"]]
    assert len(about_task) >= 2, docs  # claimed, done
    for doc in about_task:
        assert doc.get("task_id") == taskid, doc
        assert doc.get("project_id") == keys["projectid"], doc
    assert all(d.get("task_id") in (None, taskid) for d in docs)

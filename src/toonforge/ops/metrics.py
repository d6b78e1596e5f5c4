"""Prometheus metrics at `/metrics`.

Two sources, one page:
- HTTP requests, counted by the API process that served them (by route template, never the
  raw path). `serve` runs several API processes on one port; it then points
  PROMETHEUS_MULTIPROC_DIR at `DATA_DIR/state/prometheus` (emptied at start), each process
  writes its counts there, and a scrape, whichever process answers it, adds them up.
- Everything the workers do, read from the database at scrape time (ops/db_collector.py):
  workers on any host count without being scraped themselves.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toonforge.ops.logging import log_context
from toonforge.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "<unmatched>"
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_dir(settings: Settings) -> Path:
    return settings.data_dir / "state" / "prometheus"


def prepare_multiprocess(settings: Settings) -> Path:
    """For `serve` before it starts several API processes: an empty folder for their
    counts, named in the environment they inherit (prometheus-client reads it there)."""
    folder = multiprocess_dir(settings)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def in_multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class HttpMetrics:
    """This process's request counts (registered in no global registry: each app has its
    own, and a scrape builds its page from them)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "toonforge_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=None,
        )
        self.duration = Histogram(
            "toonforge_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=None,
        )
        self.multiprocess = in_multiprocess_mode()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def render(self, *collectors: Collector) -> bytes:
        """The page: this server's HTTP counts (every API process's in multiprocess mode)
        and the given collectors'."""
        registry = CollectorRegistry(auto_describe=False)
        if self.multiprocess:
            MultiProcessCollector(registry)
        else:
            registry.register(self.requests)
            registry.register(self.duration)
        for collector in collectors:
            registry.register(collector)
        return generate_latest(registry)


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/v1/File/{accesskey}/{name}`), set on the scope
    by the router; requests that matched no route share one label."""
    route: Any = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else UNMATCHED


class RequestObservation:
    """Outermost middleware: each HTTP request gets its own log context (task_id and
    project_id are filled in as the route learns them) and is counted once answered."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            with log_context():
                await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app ends without answering, the server answers 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            with log_context():
                await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(
                scope.get("method", "GET"),
                route_template(scope),
                status,
                time.perf_counter() - started,
            )

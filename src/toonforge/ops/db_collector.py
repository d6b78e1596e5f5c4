"""Metrics read from the database at scrape time: the queue, running tasks, how tasks
ended (from the small `task_metrics` aggregate table, tasks/task_metrics.py), callback
deliveries, and the live workers with what they hold (the `workers` table).

Every query is cheap whatever the number of tasks: queued and running tasks are counted
through the (status, id) index, which holds only the unfinished ones in that range; ended
tasks are never scanned. A database that cannot answer gives `toonforge_database_up 0`
and nothing else from here (the scrape itself still succeeds).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from toonforge.services import Services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import CallbackDelivery, Task, WorkerRecord
from toonforge.tasks.task_metrics import FAILED, KILLED, Aggregates, read_aggregates
from toonforge.tasks.workers import live_workers

log = logging.getLogger("toonforge.metrics")

_PATH = re.compile(r"/(?:[^/@|,;]+/)*([^/@|,;]+)")
_STAMP = re.compile(r"@\d+:\d+")


def part_label(key: str) -> str:
    """A loaded part's pool key without folders or file stamps (`sd15:model.safetensors`)."""
    return _STAMP.sub("", _PATH.sub(r"\1", key.split("|", 1)[0]))


class DatabaseCollector(Collector):
    def __init__(self, services: Services) -> None:
        self.services = services

    def describe(self) -> list[Metric]:
        return []  # registering must not query the database: a scrape does that once

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "toonforge_database_up", "1 when the database answered this scrape, else 0."
        )
        try:
            families = list(self._from_database())
        except Exception as exc:  # down, restarting, locked: say so, keep the page
            log.warning("metrics: database unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _from_database(self) -> Iterator[Metric]:
        services = self.services
        tools = [m.key for m in services.catalog]
        with services.read_sessions() as session:
            queued = dict(
                session.execute(
                    select(Task.tool_key, func.count())
                    .where(Task.status == lc.QUEUE)
                    .group_by(Task.tool_key)
                ).all()
            )
            running = dict(
                session.execute(
                    select(Task.tool_key, func.count())
                    .where(Task.status.in_(sorted(lc.RUNNING)))
                    .group_by(Task.tool_key)
                ).all()
            )
            pending = session.scalar(
                select(func.count()).where(CallbackDelivery.state == "pending")
            )
            aggregates = read_aggregates(session)
            workers = live_workers(session, services.settings.heartbeat_seconds)
            now = time.time()

        every_tool = sorted({*tools, *queued, *running})
        depth = GaugeMetricFamily(
            "toonforge_queue_depth", "Tasks waiting for a worker, by tool.", labels=["tool"]
        )
        busy = GaugeMetricFamily(
            "toonforge_tasks_running", "Tasks a worker holds now, by tool.", labels=["tool"]
        )
        for tool in every_tool:
            depth.add_metric([tool], queued.get(tool, 0))
            busy.add_metric([tool], running.get(tool, 0))
        yield depth
        yield busy
        yield from _task_families(aggregates)

        callbacks = CounterMetricFamily(
            "toonforge_callback_deliveries",
            "Callback deliveries settled, by final state (delivered, failed, refused).",
            labels=["state"],
        )
        for state in sorted({"delivered", "failed", "refused", *aggregates.callbacks}):
            callbacks.add_metric([state], aggregates.callbacks.get(state, 0))
        yield callbacks
        yield GaugeMetricFamily(
            "toonforge_callback_deliveries_pending",
            "Callback deliveries not yet delivered nor given up.",
            value=pending or 0,
        )
        yield from _worker_families(workers, every_tool, now)


def _task_families(agg: Aggregates) -> Iterator[Metric]:
    durations = HistogramMetricFamily(
        "toonforge_task_duration_seconds",
        "How long tasks ran, from the claim to their end (model loading included), by tool "
        "and outcome (succeeded, failed, killed).",
        labels=["tool", "outcome"],
    )
    for (tool, outcome), hist in sorted(agg.durations.items()):
        durations.add_metric([tool, outcome], hist.cumulative(), hist.total)
    yield durations
    ended = CounterMetricFamily(
        "toonforge_tasks_ended",
        "Tasks that reached an end, by tool and outcome (succeeded, failed, killed, "
        "cancelled: removed from the queue before it ran).",
        labels=["tool", "outcome"],
    )
    failures = CounterMetricFamily(
        "toonforge_task_failures", "Tasks that ended in an error, by tool.", labels=["tool"]
    )
    kills = CounterMetricFamily(
        "toonforge_task_kills", "Running tasks stopped by Task/Kill, by tool.", labels=["tool"]
    )
    for (tool, outcome), count in sorted(agg.ended.items()):
        ended.add_metric([tool, outcome], count)
        if outcome == FAILED:
            failures.add_metric([tool], count)
        elif outcome == KILLED:
            kills.add_metric([tool], count)
    yield ended
    yield failures
    yield kills
    batches = HistogramMetricFamily(
        "toonforge_task_batch_size",
        "How many tasks ran together in one generation, per successful task, by tool (1 "
        "for a task that ran alone).",
        labels=["tool"],
    )
    for tool, hist in sorted(agg.batches.items()):
        batches.add_metric([tool], hist.cumulative(), hist.total)
    yield batches


def _worker_families(workers: list[WorkerRecord], tools: list[str], now: float) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "toonforge_workers_live", "Workers whose heartbeat is recent.", value=len(workers)
    )
    info = GaugeMetricFamily(
        "toonforge_worker_info",
        "A live worker (1), with its host, process id, device and state (idle, busy).",
        labels=["worker", "host", "pid", "device", "status"],
    )
    age = GaugeMetricFamily(
        "toonforge_worker_heartbeat_age_seconds",
        "Seconds since a live worker's last heartbeat.",
        labels=["worker"],
    )
    loaded = GaugeMetricFamily(
        "toonforge_worker_loaded_bytes",
        "Bytes a live worker holds in memory, by loaded part.",
        labels=["worker", "part"],
    )
    can_run = GaugeMetricFamily(
        "toonforge_tool_live_workers",
        "Live workers able to run a tool (engine built, weights on their host).",
        labels=["tool"],
    )
    counts = dict.fromkeys(tools, 0)
    for w in workers:
        info.add_metric([w.id, w.host, str(w.pid), w.device, w.status], 1)
        age.add_metric([w.id], max(0.0, now - w.heartbeat_at))
        parts: dict[str, float] = {}
        for part in w.loaded or []:
            label = part_label(str(part.get("part", "")))
            parts[label] = parts.get(label, 0) + float(part.get("bytes", 0) or 0)
        for label, size in sorted(parts.items()):
            loaded.add_metric([w.id, label], size)
        for tool in w.tools or []:
            counts[tool] = counts.get(tool, 0) + 1
    for tool, count in sorted(counts.items()):
        can_run.add_metric([tool], count)
    yield info
    yield age
    yield loaded
    yield can_run

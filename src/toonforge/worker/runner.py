"""Running one claimed task through its lifecycle.

Every write goes through `held_by`, which checks this worker still holds the task: a worker
whose lease ran out (and whose task another worker took) stops writing instead of racing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from toonforge.catalog import Manifest
from toonforge.engine.contract import (
    GeneratedFile,
    GenerationInterrupted,
    GenerationResult,
    ModelError,
)
from toonforge.ops.logging import thread_target
from toonforge.services import Services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.db import DB_OUTAGE_ERRORS
from toonforge.tasks.models import Task
from toonforge.tasks.store import (
    NewOutput,
    advance,
    attach_outputs,
    elapsed_seconds,
    enqueue_callback,
    extend_lease,
    fail_task,
    held_by,
    record_progress,
    release,
    total_cost,
)
from toonforge.worker.previews import PreviewSlot, StepReporter
from toonforge.worker.progress import ProgressMeter
from toonforge.worker.progress_writer import ProgressWriter
from toonforge.worker.redact import redact_paths
from toonforge.worker.task_files import fetch_task_files

log = logging.getLogger("toonforge.worker")


class Begun(NamedTuple):
    """A claimed task as its run starts: the tool, the inputs, and whether a kill came."""

    manifest: Manifest | None
    params: dict[str, Any]
    tool_key: str
    kill_requested: bool
    project_id: int = 0


class Finished(NamedTuple):
    """A run's outcome for one task; `billed_seconds` is its share of a batch's run time
    (toonforge.worker.batch), None for a lone task (billed its own start-to-end time)."""

    task_id: int
    result: GenerationResult
    billed_seconds: float | None = None


# Files put in the storage at once when a run ends.
MAX_PARALLEL_PUTS = 8


class TaskLost(Exception):
    """This worker no longer holds the task (lease expired and it was taken again)."""


class Engine:
    """What the runner needs of an engine runtime (toonforge.engine.runtime.EngineRuntime)."""

    # The device it runs on, e.g. `cuda:1` or `cpu` (tool placement is decided by it).
    device_name: str

    def prepare(self, manifest: Manifest, params: dict[str, Any]) -> dict[str, Any]: ...
    def generate(
        self,
        manifest: Manifest,
        params: dict[str, Any],
        on_step: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> GenerationResult: ...


class TaskRunner:
    def __init__(
        self,
        services: Services,
        engine: Engine,
        worker_id: str,
        shutdown: threading.Event | None = None,
    ) -> None:
        self.services = services
        self.engine = engine
        self.worker_id = worker_id
        # Set when the worker is asked to stop: the task in hand goes back to the queue.
        self.shutdown = shutdown or threading.Event()

    # -- small transactions --------------------------------------------------------------------

    def _tx(self, task_id: int, fn: Callable[[Any, Task], Any]) -> Any:
        with self.services.sessions() as session:
            task = held_by(session, task_id, self.worker_id)
            if task is None:
                session.rollback()
                raise TaskLost(task_id)
            result = fn(session, task)
            session.commit()
            return result

    def _tx_many(self, task_ids: list[int], fn: Callable[[Any, Task], Any]) -> dict[int, Any]:
        """`fn` on each task this worker still holds, all in one transaction (a batch's
        tasks start and end together); a task another worker took is left out, logged.
        Tasks are locked in id order."""
        results: dict[int, Any] = {}
        with self.services.sessions() as session:
            for task_id in sorted(task_ids):
                task = held_by(session, task_id, self.worker_id)
                if task is None:
                    log.warning("task %s: lease lost, another worker has it", task_id)
                    continue
                results[task_id] = fn(session, task)
            session.commit()
        return results

    def _advance(self, task_id: int, *statuses: str) -> bool:
        """Walk statuses in order; returns the kill flag as read in the same transaction."""
        return bool(self._tx(task_id, _walk(statuses)))

    def _advance_many(self, task_ids: list[int], *statuses: str) -> dict[int, bool]:
        """`_advance` for several tasks in one transaction (a batch's start): each held
        task's kill flag; a task another worker took is left out."""
        return self._tx_many(task_ids, _walk(statuses))

    # -- the lifecycle ------------------------------------------------------------------------

    def begin(self, session: Any, task: Task) -> Begun:
        """In the claim's own transaction: the claim moved the task to task_accept, and
        reading the request is all the preprocessing there is, so its statuses are written
        there too (one transaction fewer per task)."""
        for status in (lc.PREPROCESS_START, lc.PREPROCESS_END, lc.ASSIGN):
            advance(session, task, status)
        manifest = self.services.catalog.by_key(task.tool_key)
        return Begun(
            manifest, dict(task.parameters), task.tool_key, task.kill_requested, task.project_id
        )

    def run(self, task_id: int, begun: Begun) -> None:
        stop = threading.Event()
        heartbeat = threading.Thread(
            # thread_target: the task's log fields follow it into this thread
            target=thread_target(self._heartbeat),
            args=(task_id, stop),
            name=f"heartbeat-{task_id}",
            daemon=True,
        )
        heartbeat.start()
        try:
            self._run(task_id, begun)
        except TaskLost:
            log.warning("task %s: lease lost, another worker has it; stopping", task_id)
        finally:
            stop.set()
            heartbeat.join(timeout=5)

    def _heartbeat(self, task_id: int, stop: threading.Event) -> None:
        settings = self.services.settings
        while not stop.wait(settings.heartbeat_seconds):
            try:
                with self.services.sessions() as session:
                    still = extend_lease(session, task_id, self.worker_id, settings.lease_seconds)
                    session.commit()
                if not still:
                    return
            except Exception:  # a database blip: the next beat tries again
                log.exception("heartbeat for task %s failed", task_id)

    def _run(self, task_id: int, begun: Begun) -> None:
        manifest, params, tool_key, killed = begun[:4]
        if manifest is None:
            self._fail(task_id, f"tool {tool_key} is not in this worker's catalog")
            return
        if killed:
            self._cancel(task_id)
            return
        try:
            fetch_task_files(self.services, params)  # what the run reads from the storage
            info = self.engine.prepare(manifest, params)
        except ModelError as exc:
            self._fail(task_id, str(exc))
            return
        except Exception as exc:
            log.exception("task %s: loading %s failed", task_id, manifest.key)
            self._fail(task_id, f"loading the model failed: {type(exc).__name__}: {exc}")
            return
        if self.shutdown.is_set():
            self._release(task_id)
            return
        if self._advance(task_id, lc.START):
            self._cancel(task_id)
            return

        meter = ProgressMeter()
        kill_seen = threading.Event()
        lost = threading.Event()
        previews = PreviewSlot(self.services.settings.preview_every_steps)

        def write(messages: list[dict[str, Any]]) -> None:
            try:
                with self.services.sessions() as session:
                    steps = [(message, [task_id]) for message in messages]
                    held, kills = record_progress(session, self.worker_id, steps)
                    if held:
                        previews.sync(session, task_id)
                    session.commit()
                if not held:
                    lost.set()
                if kills:
                    kill_seen.set()
            except DB_OUTAGE_ERRORS as exc:
                # Progress is not worth losing the run for: the database may be restarting.
                # The run goes on; the closing writes wait for the database.
                log.warning("task %s: progress not recorded (%s)", task_id, type(exc).__name__)

        writer: ProgressWriter[dict[str, Any]] = ProgressWriter(write, f"progress-{task_id}")
        on_step = StepReporter(lambda step, n: writer.post(meter.message(step, n)), previews)
        outcome: GenerationResult | Exception
        try:
            outcome = self.engine.generate(
                manifest,
                params,
                on_step,
                lambda: kill_seen.is_set() or lost.is_set() or self.shutdown.is_set(),
            )
        except Exception as exc:
            outcome = exc
        finally:
            writer.close()
        if lost.is_set():
            raise TaskLost(task_id)
        if isinstance(outcome, GenerationInterrupted):
            if kill_seen.is_set():
                self._cancel(task_id)
            else:
                self._release(task_id)
        elif isinstance(outcome, ModelError):
            self._fail(task_id, str(outcome))
        elif isinstance(outcome, Exception):
            log.error("task %s: generation failed", task_id, exc_info=outcome)
            self._fail(task_id, f"generation failed: {type(outcome).__name__}: {outcome}")
        else:
            self._finish(task_id, outcome, info)

    def _retrying(self, what: str, attempt: Callable[[], Any]) -> Any:
        """`attempt()` for the writes that close a run: while the database is unreachable,
        wait and try again (up to the lease: past it, another worker owns the task anyway)."""
        deadline = time.monotonic() + self.services.settings.lease_seconds
        delay = 0.2
        while True:
            try:
                return attempt()
            except DB_OUTAGE_ERRORS as exc:
                if time.monotonic() + delay > deadline or self.shutdown.is_set():
                    raise
                log.warning("%s: database unavailable (%s); retrying", what, exc)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _tx_retrying(self, task_id: int, fn: Callable[[Any, Task], Any]) -> Any:
        return self._retrying(f"task {task_id}", lambda: self._tx(task_id, fn))

    def _finish(self, task_id: int, result: GenerationResult, info: dict[str, Any]) -> None:
        """A lone task's end: billed its own start-to-end time."""
        self._finish_many(info, [Finished(task_id, result)])

    def _finish_many(self, info: dict[str, Any], runs: list[Finished]) -> list[int]:
        """End the tasks of one run (a lone task, or a batch's): one transaction moves them
        all to postprocessing, their files are stored (in parallel), one transaction
        attaches the files and closes them. The ids of the tasks closed."""
        by_id = {run.task_id: run for run in runs}
        debug = {
            run.task_id: self.redact(json.dumps({**info, **run.result.info}, default=str))
            for run in runs
        }

        def end(session: Any, task: Task) -> str:
            advance(session, task, lc.OUTPUT_FULL, debug[task.id])
            advance(session, task, lc.END)
            advance(session, task, lc.POSTPROCESS_START)
            task.debugoutput = debug[task.id]
            return task.uuid

        ids = list(by_id)
        names = ", ".join(map(str, ids))
        uuids = self._retrying(f"task {names}", lambda: self._tx_many(ids, end))
        outputs = self._store_files({tid: (uuid, by_id[tid].result) for tid, uuid in uuids.items()})

        def close(session: Any, task: Task) -> None:
            billed = by_id[task.id].billed_seconds
            attach_outputs(session, task, outputs[task.id])
            task.pexit = "0"
            seconds = elapsed_seconds(task) if billed is None else billed
            task.totalcost = total_cost(task.cps, seconds)
            task.lease_expires_at = None
            session.flush()
            advance(session, task, lc.POSTPROCESS_END)
            enqueue_callback(session, task)

        closed = list(self._retrying(f"task {names}", lambda: self._tx_many(list(uuids), close)))
        for task_id in closed:
            log.info("task %s: done, %d file(s)", task_id, len(outputs[task_id]))
        return closed

    def _store_files(
        self, results: dict[int, tuple[str, GenerationResult]]
    ) -> dict[int, list[NewOutput]]:
        """Each task's files put in the storage under `<task uuid>/<name>`; several files are
        put at once (an object store answers each put after a round trip)."""
        jobs = [
            (task_id, f"{uuid}/{f.name}", f)
            for task_id, (uuid, result) in results.items()
            for f in result.files
        ]

        def put(job: tuple[int, str, GeneratedFile]) -> NewOutput:
            _, key, f = job
            size = self.services.storage.put(key, f.data, f.content_type)
            return NewOutput(f.name, f.content_type, size, key)

        outputs: dict[int, list[NewOutput]] = {task_id: [] for task_id in results}
        if len(jobs) == 1:
            stored = [put(jobs[0])]
        else:
            with ThreadPoolExecutor(min(len(jobs), MAX_PARALLEL_PUTS), "store") as pool:
                stored = list(pool.map(put, jobs))
        for (task_id, _, _), output in zip(jobs, stored, strict=True):
            outputs[task_id].append(output)
        return outputs

    def redact(self, text: str) -> str:
        """What clients see of this server's messages: its folders named, not shown (the
        server log keeps the full text)."""
        return redact_paths(text, self.services.settings)

    def _fail(self, task_id: int, error: str) -> None:
        log.warning("task %s failed: %s", task_id, error)
        shown = self.redact(error)

        def write(session: Any, task: Task) -> None:
            fail_task(session, task, shown)
            enqueue_callback(session, task)

        self._tx_retrying(task_id, write)

    def _release(self, task_id: int) -> None:
        """Give the task back (worker shutting down): another worker takes it at once."""

        def write(session: Any, task: Task) -> None:
            release(session, task, "worker shutting down; task handed back to the queue")

        self._tx_retrying(task_id, write)
        log.info("task %s: handed back to the queue", task_id)

    def _cancel(self, task_id: int) -> None:
        def write(session: Any, task: Task) -> None:
            advance(session, task, lc.CANCEL)
            task.pexit = "1"
            task.totalcost = "0"
            task.debugerror = (task.debugerror + "\nTask was killed on request.").strip()
            task.lease_expires_at = None
            enqueue_callback(session, task)

        self._tx_retrying(task_id, write)
        log.info("task %s: killed", task_id)


def _walk(statuses: tuple[str, ...]) -> Callable[[Any, Task], bool]:
    """A transaction step that walks a task through `statuses` and reads its kill flag."""

    def step(session: Any, task: Task) -> bool:
        for status in statuses:
            advance(session, task, status)
        return bool(task.kill_requested)

    return step

"""Cross-task batching, worker side: claim a task with its companions and run them as one.

`claim_batch` claims the oldest task as before; when it has a batch key (toonforge.catalog.
batch_key) it also claims queued tasks with the same key, and waits for a burst to fill the
batch while its tasks keep arriving less than `batch_wait_ms` apart; a lone task never waits
longer than `batch_wait_ms`. A batch holds at most `batch_cap` images: TOONFORGE_MAX_BATCH,
the tool's own `backend.max_batch`, and on a GPU what the tool's memory plan fits.

`BatchRunner` runs two or more such tasks through the engine's `generate_batch`: each keeps
its own lifecycle (statuses, progress events, outputs, debugoutput, callback). A Kill takes its
task out of the run at the next step and the others go on; a task whose inputs fail fails
alone. Cost: the batch's run time (task_start to the end of generation) is split between the
tasks in proportion to their images, so that a batch bills what the same run would bill one
task, and each task pays its share.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from toonforge.catalog import Manifest
from toonforge.engine.contract import GenerationInterrupted, GenerationResult, ModelError
from toonforge.services import Services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.batch_claim import claim_companions, task_images
from toonforge.tasks.db import DB_OUTAGE_ERRORS
from toonforge.tasks.store import claim, record_progress
from toonforge.worker.progress import ProgressMeter
from toonforge.worker.progress_writer import ProgressWriter
from toonforge.worker.runner import Begun, Finished, TaskLost, TaskRunner

log = logging.getLogger("toonforge.worker")

Claimed = list[tuple[int, Begun]]


class BatchEngine(Protocol):
    """What a batch needs of the engine (toonforge.engine.runtime.EngineRuntime)."""

    def generate_batch(
        self,
        manifest: Manifest,
        params_list: list[dict[str, Any]],
        on_step: Callable[[int, int], None],
        should_stop: Callable[[int], bool],
    ) -> list[GenerationResult | Exception]: ...

    def batch_images(self, manifest: Manifest, params: dict[str, Any], cap: int) -> int: ...


def claim_batch(
    services: Services,
    runner: TaskRunner,
    tool_keys: list[str],
    wake: threading.Event,
    prefer: list[str] | None = None,
) -> Claimed:
    """The next task this worker can serve, with its batch companions (empty: none queued).
    Each claimed task's preprocessing statuses are written in its claim's transaction."""
    settings = services.settings
    worker_id = runner.worker_id
    with services.sessions() as session:
        task = claim(
            session,
            worker_id=worker_id,
            tool_keys=tool_keys,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            prefer=prefer or (),
            prefer_max_wait=settings.affinity_max_wait_seconds,
        )
        if task is None:
            session.commit()
            return []
        group = [task]
        cap = batch_cap(services, runner.engine, task) if task.batch_key else 1
        if cap > 1:
            group += claim_companions(
                session,
                task,
                worker_id=worker_id,
                max_images=cap - task_images(task.parameters),
                lease_seconds=settings.lease_seconds,
            )
        claimed = [(t.id, runner.begin(session, t)) for t in group]
        session.commit()
    images = sum(task_images(t.parameters) for t in group)
    if images >= cap:
        return claimed
    # The gather window: a burst of Runs arrives over some milliseconds, one Run after
    # another. The window restarts at each arrival, so a burst whose Runs come less than
    # `batch_wait_ms` apart fills the batch; a lone task waits `batch_wait_ms` once, and a
    # batch gathers for at most `max_batch` windows.
    window = settings.batch_wait_ms / 1000
    deadline = time.monotonic() + window
    while images < cap and not runner.shutdown.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not wake.wait(remaining):
            break
        wake.clear()
        with services.sessions() as session:
            more = claim_companions(
                session,
                task,
                worker_id=worker_id,
                max_images=cap - images,
                lease_seconds=settings.lease_seconds,
            )
            claimed += [(t.id, runner.begin(session, t)) for t in more]
            session.commit()
        if more:
            deadline = time.monotonic() + window
        images += sum(task_images(t.parameters) for t in more)
    return claimed


def batch_cap(services: Services, engine: Any, task: Any) -> int:
    """The most images a batch led by `task` may hold: TOONFORGE_MAX_BATCH, the tool's own
    `backend.max_batch` if smaller, and what the tool's memory plan fits on this worker's
    device at the task's size (`batch_images`, on a GPU)."""
    cap = services.settings.max_batch
    manifest = services.catalog.by_key(task.tool_key)
    if manifest is None:
        return 1
    if manifest.backend.max_batch is not None:
        cap = min(cap, manifest.backend.max_batch)
    fit = getattr(engine, "batch_images", None)
    if cap > 1 and fit is not None:
        try:
            cap = min(cap, fit(manifest, task.parameters, cap))
        except Exception:  # a plan that cannot be made: batch as the settings say
            log.warning("no memory plan to size a batch of %s", manifest.key, exc_info=True)
    return max(1, cap)


class BatchRunner:
    """Runs a claimed batch; the per-task writes are the TaskRunner's own."""

    def __init__(self, runner: TaskRunner) -> None:
        self.runner = runner
        self.services = runner.services

    def run(self, claimed: Claimed) -> None:
        stop = threading.Event()
        beats = [
            threading.Thread(
                target=self.runner._heartbeat,
                args=(task_id, stop),
                daemon=True,
                name=f"hb-{task_id}",
            )
            for task_id, _ in claimed
        ]
        for beat in beats:
            beat.start()
        try:
            self._run(claimed)
        finally:
            stop.set()
            for beat in beats:
                beat.join(timeout=5)

    def _each(self, task_id: int, fn: Callable[[int], None]) -> None:
        """One task's closing write; a task this worker lost is left to its new holder."""
        try:
            fn(task_id)
        except TaskLost:
            log.warning("task %s: lease lost, another worker has it", task_id)

    def _run(self, claimed: Claimed) -> None:
        r = self.runner
        live: list[tuple[int, Begun]] = []
        for task_id, begun in claimed:
            if begun.manifest is None:
                self._each(task_id, lambda t, b=begun: r._fail(t, f"tool {b.tool_key} is not here"))
            elif begun.kill_requested:
                self._each(task_id, r._cancel)
            else:
                live.append((task_id, begun))
        if not live:
            return
        manifest = live[0][1].manifest
        assert manifest is not None
        try:
            info = r.engine.prepare(manifest, live[0][1].params)
        except Exception as exc:
            error = str(exc) if isinstance(exc, ModelError) else f"loading the model failed: {exc}"
            for task_id, _ in live:
                self._each(task_id, lambda t: r._fail(t, error))
            return
        if r.shutdown.is_set():
            for task_id, _ in live:
                self._each(task_id, r._release)
            return
        # One transaction starts them all; a task killed meanwhile ends here.
        begun_of = dict(live)
        kills = r._advance_many(list(begun_of), lc.START)
        for task_id, killed in kills.items():
            if killed:
                self._each(task_id, r._cancel)
        started = [(t, begun_of[t]) for t in begun_of if t in kills and not kills[t]]
        if started:
            self._generate(manifest, info, started)

    def _generate(self, manifest: Manifest, info: dict[str, Any], started: Claimed) -> None:
        r = self.runner
        ids = [task_id for task_id, _ in started]
        running = set(ids)  # tasks still in the run: progress is written for these
        killed: set[int] = set()
        lost: set[int] = set()
        meter = ProgressMeter()

        def write(steps: list[tuple[dict[str, Any], list[int]]]) -> None:
            """Beside the loop (toonforge.worker.progress_writer): each posted step's event
            for the tasks that were in the run at that step, and their kill flags."""
            try:
                with self.services.sessions() as session:
                    held, kills = record_progress(session, r.worker_id, steps)
                    session.commit()
            except DB_OUTAGE_ERRORS as exc:
                log.warning("batch %s: progress not recorded (%s)", ids, type(exc).__name__)
                return
            lost.update({t for _, in_run in steps for t in in_run} - held)
            killed.update(kills)

        writer: ProgressWriter[tuple[dict[str, Any], list[int]]] = ProgressWriter(
            write, f"progress-{ids[0]}"
        )

        def on_step(step: int, total: int) -> None:
            writer.post((meter.message(step, total), sorted(running)))

        def should_stop(index: int) -> bool:
            task_id = ids[index]
            if task_id in killed or task_id in lost or r.shutdown.is_set():
                running.discard(task_id)
                return True
            return False

        images = [task_images(begun.params) for _, begun in started]
        began = time.monotonic()
        try:
            engine = cast(BatchEngine, r.engine)
            outcomes: list[Any] = engine.generate_batch(
                manifest, [begun.params for _, begun in started], on_step, should_stop
            )
        except Exception as exc:
            if not isinstance(exc, ModelError):
                log.exception("batch %s: generation failed", ids)
            error = str(exc) if isinstance(exc, ModelError) else f"generation failed: {exc}"
            outcomes = [ModelError(error)] * len(started)
        finally:
            writer.close()
        seconds = time.monotonic() - began
        finished: list[Finished] = []
        for k, (task_id, outcome) in enumerate(zip(ids, outcomes, strict=True)):
            if task_id in lost:
                log.warning("task %s: lease lost, another worker has it", task_id)
            elif isinstance(outcome, GenerationResult):
                share = images[k] / sum(images)
                outcome.info["batch_size"] = len(ids)  # what /metrics' histogram counts
                outcome.info["batch"] = {
                    "tasks": len(ids),
                    "images": sum(images),
                    "position": k,
                    "seconds": round(seconds, 3),
                    "cost_share": round(share, 6),
                }
                finished.append(Finished(task_id, outcome, billed_seconds=seconds * share))
            elif isinstance(outcome, GenerationInterrupted):
                self._each(task_id, r._cancel if task_id in killed else r._release)
            else:
                self._each(task_id, lambda t, e=outcome: r._fail(t, _describe(e)))
        if finished:
            r._finish_many(info, finished)


def _describe(error: BaseException) -> str:
    if isinstance(error, ModelError):
        return str(error)
    return f"generation failed: {type(error).__name__}: {error}"

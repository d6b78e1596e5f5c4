"""The worker's gather window for a batch: Runs of one burst that arrive less than
TOONFORGE_BATCH_WAIT_MS apart all join the batch, even when the burst as a whole lasts longer
than the window; a lone task is claimed alone once the window passed. (The window is made
long here, and the Runs far apart within it, so that a busy machine cannot change the
outcome.)"""

from __future__ import annotations

import threading
from typing import Any, cast

from toonforge.catalog.store import Catalog
from toonforge.engine.runtime import EngineRuntime
from toonforge.tasks.models import Task
from toonforge.testing import InProcess
from toonforge.worker.batch import batch_cap, claim_batch
from toonforge.worker.runner import TaskRunner

CARTOON = "/v1/Run/futurist/CartoonMix%20v1.0"
TOOL = "futurist/CartoonMix v1.0"
BODY = {"prompt": "a cat", "samples": "1", "steps": "4", "width": "64", "height": "64"}


def _runner(inproc: InProcess, wait_ms: float) -> TaskRunner:
    services = inproc.services
    services.settings = services.settings.model_copy(
        update={"max_batch": 8, "batch_wait_ms": wait_ms}
    )
    return TaskRunner(services, cast(Any, None), worker_id="gather-test")


def test_a_burst_longer_than_the_window_fills_one_batch(inproc: InProcess) -> None:
    runner = _runner(inproc, wait_ms=1500)
    wake = threading.Event()
    first = inproc.client.ok(CARTOON, {**BODY, "seed": "1"})["taskid"]
    later: list[str] = []

    def burst() -> None:
        # Four more Runs 500 ms apart: the burst lasts 2 s, longer than the 1.5 s window,
        # but each Run comes well within the window of the one before.
        for seed in range(2, 6):
            threading.Event().wait(0.5)
            later.append(inproc.client.ok(CARTOON, {**BODY, "seed": str(seed)})["taskid"])
            wake.set()

    sender = threading.Thread(target=burst)
    sender.start()
    claimed = claim_batch(inproc.services, runner, [TOOL], wake)
    sender.join()
    assert sorted(task_id for task_id, _ in claimed) == sorted(int(t) for t in [first, *later])


def test_a_lone_task_is_claimed_alone_after_the_window(inproc: InProcess) -> None:
    runner = _runner(inproc, wait_ms=100)
    lone = inproc.client.ok(CARTOON, {**BODY, "seed": "1"})["taskid"]
    claimed = claim_batch(inproc.services, runner, [TOOL], threading.Event())
    assert [task_id for task_id, _ in claimed] == [int(lone)]


def test_a_tools_own_max_batch_caps_the_batch(inproc: InProcess) -> None:
    """`backend.max_batch` in a tool's manifest: fewer images than TOONFORGE_MAX_BATCH. On
    this CPU the engine's memory-plan cap (a GPU's) leaves the smaller of the two."""
    runner = _runner(inproc, wait_ms=100)
    services = inproc.services
    manifest = services.catalog.by_key(TOOL)
    assert manifest is not None
    backend = manifest.backend.model_copy(update={"max_batch": 2})
    capped = manifest.model_copy(update={"backend": backend})
    services.catalog = Catalog([capped if m.key == TOOL else m for m in services.catalog])
    ids = [int(inproc.client.ok(CARTOON, {**BODY, "seed": str(s)})["taskid"]) for s in range(4)]
    claimed = claim_batch(services, runner, [TOOL], threading.Event())
    assert [task_id for task_id, _ in claimed] == ids[:2]
    with services.sessions() as session:
        task = session.get(Task, ids[2])
        assert batch_cap(services, EngineRuntime(services.settings), task) == 2

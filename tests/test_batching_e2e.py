"""Cross-task batching through a real server: tasks queued while the worker is held run as one
batch, each with its own outputs, and a Kill of one mid-batch leaves the others finishing."""

from __future__ import annotations

import json
from typing import Any

import httpx

from support import CARTOON, SMALL, Client, Server, workers_paused

# Many cheap steps: the batch is surely still running when a Kill is sent.
BATCHED = {**SMALL, "steps": 30, "width": 64, "height": 64}


def _png(task: dict[str, Any]) -> list[bytes]:
    return [httpx.get(o["url"], timeout=30).content for o in task["outputs"]]


def test_tasks_queued_together_run_as_one_batch(server: Server, client: Client) -> None:
    client.wait(client.run(CARTOON, SMALL)["taskid"])  # the model is loaded, the worker idle
    bodies = [
        {**BATCHED, "prompt": "a red cat", "seed": "10"},
        {**BATCHED, "prompt": "a blue dog", "seed": "20", "samples": 2},
        {**BATCHED, "prompt": "a green frog AND a hat", "seed": "30"},
        {**BATCHED, "prompt": "a yellow bird", "seed": "40"},
    ]
    with workers_paused(server):
        runs = [client.run(CARTOON, body) for body in bodies]
    ids = [r["taskid"] for r in runs]
    # Kill the third task while the batch runs (held still while the Kill is sent).
    client.wait(ids[0], until=("task_output",), timeout=120)
    with workers_paused(server):
        killed = client.post("/v1/Task/Kill", {"taskid": ids[2]}).json()
        assert killed["result"] is True, killed
    tasks = [client.wait(taskid, timeout=300) for taskid in ids]

    assert tasks[2]["status"] == "task_cancel"
    assert tasks[2]["outputs"] == [] and tasks[2]["totalcost"] == "0"
    finished = [tasks[0], tasks[1], tasks[3]]
    for task, samples in zip(finished, (1, 2, 1), strict=True):
        assert task["status"] == "task_postprocess_end" and task["pexit"] == "0", task
        assert len(task["outputs"]) == samples
        batch = json.loads(task["debugoutput"])["batch"]
        assert batch["tasks"] == 4 and batch["images"] == 5, batch
        assert float(task["totalcost"]) > 0
    shares = [json.loads(t["debugoutput"])["batch"]["cost_share"] for t in finished]
    assert shares == [0.2, 0.4, 0.2]
    # Each task has its own images: other prompts and seeds, other pixels.
    outputs = [png for task in finished for png in _png(task)]
    assert len(set(outputs)) == len(outputs) == 4
    # And the same bytes as the same request run alone.
    alone = client.wait(client.run(CARTOON, bodies[3])["taskid"], timeout=300)
    assert "batch" not in json.loads(alone["debugoutput"])
    assert _png(alone) == _png(tasks[3])


FLUX = "WizardWhitebeard/Toon-Renders"
FLUX_BODY = {"samples": 1, "steps": 3, "scale": 3.5, "width": 64, "height": 64}


def test_flux_tasks_queued_together_run_as_one_batch(server: Server, client: Client) -> None:
    """The FLUX path through the worker: one run, each task its own images, the same bytes
    as the same request alone."""
    client.wait(client.run(FLUX, {**FLUX_BODY, "prompt": "warm up", "seed": "1"})["taskid"])
    bodies = [
        {**FLUX_BODY, "prompt": "w1z_r3nd3r, a potato", "seed": "10"},
        {**FLUX_BODY, "prompt": "w1z_r3nd3r, a lemon", "seed": "20", "samples": 2},
    ]
    with workers_paused(server):
        ids = [client.run(FLUX, body)["taskid"] for body in bodies]
    tasks = [client.wait(taskid, timeout=300) for taskid in ids]
    for task, samples in zip(tasks, (1, 2), strict=True):
        assert task["status"] == "task_postprocess_end" and task["pexit"] == "0", task
        assert len(task["outputs"]) == samples
        batch = json.loads(task["debugoutput"])["batch"]
        assert batch["tasks"] == 2 and batch["images"] == 3, batch
    alone = client.wait(client.run(FLUX, bodies[1])["taskid"], timeout=300)
    assert "batch" not in json.loads(alone["debugoutput"])
    assert _png(alone) == _png(tasks[1])

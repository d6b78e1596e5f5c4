"""The CartoonMix tool end to end: HTTP request → worker → real tiny SD1.5 pipeline → PNGs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from support import Client, Server, images, run_ok

CARTOON = "futurist/CartoonMix%20v1.0"
SEED_PAGE_REQUEST = {
    "prompt": "(masterpiece, top quality, best quality, official art, beautiful and aesthetic:1.2),"
    " 1girl, beautiful, high detailed, purple hair with a hint of pink, pink eyes, dark lighting,"
    " serious face, looking the sky, sky, medium shot, black sweater, jewelry",
    "negativePrompt": "bad-hands-5 EasyNegativeV2 ng_deepnegative_v1_75t",
    "samples": 4,
    "steps": 20,
    "scale": "4",
    "seed": "123456",
    "clipSkip": 4,
    "width": 512,
    "height": 512,
    "scheduler": "EulerDiscreteScheduler",
    "callbackUrl": "You can provide a callback URL; Wiro will send a POST request to it when the "
    "task is completed.",
}
SMALL = {
    "prompt": "a cartoon cat",
    "negativePrompt": "",
    "samples": 1,
    "steps": 3,
    "width": 64,
    "height": 64,
    "seed": "42",
}


def test_seed_page_request_runs_to_success(client: Client) -> None:
    task = run_ok(client, CARTOON, SEED_PAGE_REQUEST)
    names = [o["name"] for o in task["outputs"]]
    assert names == ["0.png", "1.png", "2.png", "3.png"]
    imgs = images(task)
    assert all(im.shape == (512, 512, 3) for im in imgs)
    assert not np.array_equal(imgs[0], imgs[1]), "samples must differ (seed+i)"
    assert task["size"] == str(sum(int(o["size"]) for o in task["outputs"]))
    # Billing: cps x elapsed, for a success.
    assert float(task["totalcost"]) == pytest.approx(
        float(task["cps"]) * float(task["elapsedseconds"]), rel=1e-3
    )
    assert float(task["totalcost"]) > 0
    # Every lifecycle time is stamped, in order.
    order = [
        "createtime",
        "accepttime",
        "preprocessstarttime",
        "preprocessendtime",
        "assigntime",
        "starttime",
        "endtime",
        "postprocessstarttime",
        "postprocessendtime",
    ]
    stamps = [int(task[f]) for f in order]
    assert all(s > 0 for s in stamps) and stamps == sorted(stamps)
    # The offline mode is said in the outputs' metadata.
    first = httpx.get(task["outputs"][0]["url"]).content
    meta = Image.open(io.BytesIO(first)).info
    assert meta.get("toonforge-tiny") == "true"
    assert meta.get("seed") == "123456"


def test_same_seed_same_images_and_sample_i_is_seed_plus_i(client: Client) -> None:
    a = images(run_ok(client, CARTOON, {**SMALL, "samples": 2}))
    b = images(run_ok(client, CARTOON, {**SMALL, "samples": 2}))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    solo = images(run_ok(client, CARTOON, {**SMALL, "samples": 1, "seed": "43"}))[0]
    assert np.abs(solo - a[1]).max() <= 2, "image 1 of seed 42 is reproducible alone as seed 43"
    other = images(run_ok(client, CARTOON, {**SMALL, "seed": "7"}))[0]
    assert not np.array_equal(other, a[0])


@pytest.mark.parametrize(
    "scheduler",
    [
        "DDIMScheduler",
        "LMSDiscreteScheduler",
        "DPMSolverMultistepScheduler",
        "PNDMScheduler",
        "DDPMScheduler",
        "EulerAncestralDiscreteScheduler",
    ],
)
def test_each_scheduler_changes_the_image(client: Client, scheduler: str) -> None:
    base = images(run_ok(client, CARTOON, {**SMALL, "scheduler": "EulerDiscreteScheduler"}))[0]
    other = images(run_ok(client, CARTOON, {**SMALL, "scheduler": scheduler}))[0]
    assert not np.array_equal(base, other)


def test_clip_skip_changes_the_image(client: Client) -> None:
    results = [images(run_ok(client, CARTOON, {**SMALL, "clipSkip": k}))[0] for k in (1, 2, 4)]
    assert not np.array_equal(results[0], results[1])
    assert not np.array_equal(results[1], results[2])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", "a dog in the rain"),
        ("negativePrompt", "blurry"),
        ("steps", 5),
        ("scale", 9),
        ("seed", "43"),
    ],
)
def test_every_input_matters(client: Client, field: str, value: Any) -> None:
    base = images(run_ok(client, CARTOON, SMALL))[0]
    changed = images(run_ok(client, CARTOON, {**SMALL, field: value}))[0]
    assert not np.array_equal(base, changed), field


def test_width_height_and_samples(client: Client) -> None:
    task = run_ok(client, CARTOON, {**SMALL, "samples": 3, "width": 128, "height": 64})
    imgs = images(task)
    assert len(imgs) == 3 and all(im.shape == (64, 128, 3) for im in imgs)


def test_input_output_delete(client: Client) -> None:
    task = run_ok(client, CARTOON, SMALL)
    url = task["outputs"][0]["url"]
    assert httpx.get(url).status_code == 200
    token = task["socketaccesstoken"]
    for _ in range(2):  # idempotent
        r = client.post("/v1/Task/InputOutputDelete", {"tasktoken": token}).json()
        assert r["result"] is True
    assert client.detail(task["id"])["outputs"] == []
    gone = httpx.get(url)
    assert gone.status_code == 404 and gone.json()["result"] is False


def test_output_url_needs_its_access_key(client: Client, server: Server) -> None:
    task = run_ok(client, CARTOON, SMALL)
    out = task["outputs"][0]
    wrong = out["url"].replace(out["accesskey"], "x" * 30)
    assert httpx.get(wrong).status_code == 404


def test_pipeline_stays_loaded_between_tasks(client: Client) -> None:
    run_ok(client, CARTOON, SMALL)
    info = json.loads(run_ok(client, CARTOON, SMALL)["debugoutput"])
    assert info["reused"] is True and info["tiny"] is True
    assert info["family"] == "sd15"
    assert [p["reused"] for p in info["parts"]] == [True]


def test_models_status_shows_what_the_worker_has_loaded(client: Client, server: Server) -> None:
    run_ok(client, CARTOON, SMALL)
    out = subprocess.run(
        [sys.executable, "-m", "toonforge", "models", "status"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    cartoon = out.split("futurist/CartoonMix v1.0", 1)[1].split("\n\n", 1)[0]
    assert "loaded in worker" in cartoon, out
    assert "loaded in running workers: 0" not in out
    assert "used by futurist/CartoonMix v1.0" in out

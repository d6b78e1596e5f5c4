"""retroAIx/Retro-Cartoons end to end: HTTP -> worker -> tiny SDXL base + Kohya LoRA + refiner.

One server of this module's own (SQLite): the SDXL parts it loads are this module's business.
The worker runs with one torch thread: tiny models on a shared 2-core machine are many times
slower with two threads competing with other processes.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from support import Client, Server, create_keys, images, run_ok

RETRO = "retroAIx/Retro-Cartoons"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# The page's curl request, verbatim: four 1024x1024 samples, 60 base + 4 refiner steps.
SNIPPET = r"""
set -e
export YOUR_API_KEY="$KEY";
export YOUR_API_SECRET="$SECRET";
# unix time or any random integer value
export NONCE=$(date +%s%N);
# hmac-SHA256 (YOUR_API_SECRET+Nonce) with YOUR_API_KEY
export SIGNATURE="$(echo -n "${YOUR_API_SECRET}${NONCE}" | openssl dgst -sha256 -hmac "${YOUR_API_KEY}")";
curl -s -X POST "$BASE/v1/Run/retroAIx/Retro-Cartoons" -H "Content-Type: multipart/form-data" -H "x-api-key: ${YOUR_API_KEY}" -H "x-nonce: ${NONCE}" -H "x-signature: ${SIGNATURE}" -d '{ "prompt": "(Seductive, sexy Barbara Gordon, blue eyes, lipstick, pinup pose, red lips, mascara, eyelashes, hourglass figure, feminine, posing, pov, from front, close-up), (btstyle), (melkormancin-dh), (Jabstyle), (masterpiece), (detailed image, high resolution), (perfectly proportional face), (highest quality, high definition, ultra high-res), (best quality, highres), score_9, score_8, score_8_up, score_7_up, score_6_up, score_4_up", "negativePrompt": "(Blurred poorly drawn eyes), (2 girls), (twins), (out of frame), (bad quality eyes), (asymmetric eyes), long neck, worst quality, low quality, monochrome, elongated neck, blurred eyes, undetailed eyes, long neck, ugly face, out of frame, blurry, bad anatomy, blurred, watermark, grainy, signature, cut off, oversharpened, bad art, sign, amateur, extra limbs, dull colours, boring, lacklustre, poorly drawn, bad art, text, bad quality eyes, bad anatomy, pencil, abominations, more than 2 legs, more than 2 hand", "samples": 4, "steps": 60, "scale": "4", "highNoiseFrac": "0.8", "stepsRefiner": 20, "seed": "123456", "width": 1024, "height": 1024, "refiner": "", "scheduler": "EulerDiscreteScheduler", "callbackUrl": "You can provide a callback URL; Wiro will send a POST request to it when the task is completed." }';
"""  # noqa: E501 - the page's line, kept whole

SMALL = {
    "prompt": "btstyle, a cartoon bat over the city",
    "negativePrompt": "",
    "samples": 1,
    "steps": 6,
    "stepsRefiner": 10,
    "width": 64,
    "height": 64,
    "seed": "1",
}


def _server(folder: Path) -> Server:
    srv = Server(folder, None, **ONE_THREAD)
    srv.keys = create_keys(srv.env)  # type: ignore[attr-defined]
    return srv.start()


@pytest.fixture(scope="module")
def retro_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _server(tmp_path_factory.mktemp("retro"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def retro(retro_server: Server) -> Client:
    return Client(retro_server.url, retro_server.keys)  # type: ignore[attr-defined]


_cache: dict[str, np.ndarray] = {}


def small_image(client: Client, **changes: Any) -> np.ndarray:
    key = json.dumps(changes, sort_keys=True)
    if key not in _cache:
        _cache[key] = images(run_ok(client, RETRO, {**SMALL, **changes}))[0]
    return _cache[key]


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl")
def test_page_request_runs_to_success(retro_server: Server, retro: Client) -> None:
    env = {
        "KEY": retro.keys["apikey"],
        "SECRET": retro.keys["apisecret"],
        "BASE": retro_server.url,
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    out = subprocess.run(
        ["bash", "-c", SNIPPET], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    answer = json.loads(out.stdout)
    assert answer["result"] is True and answer["errors"] == [], answer
    task = retro.wait(answer["taskid"], timeout=900)
    assert task["status"] == "task_postprocess_end" and task["pexit"] == "0", task
    assert [o["name"] for o in task["outputs"]] == ["0.png", "1.png", "2.png", "3.png"]
    imgs = images(task)
    assert all(im.shape == (1024, 1024, 3) for im in imgs)
    assert not np.array_equal(imgs[0], imgs[1]), "samples differ (seed + i)"
    info = json.loads(task["debugoutput"])
    assert info["family"] == "sdxl" and info["tiny"] is True
    assert info["refiner"] == "YES" and info["refiner_loaded"] is True
    # 60 base steps cut at 0.8 (timesteps >= 200 of 945, 929, ... 1): 47; the refiner's own
    # 20-step schedule (951 ... 1) below 200: 4.
    assert (info["base_steps_run"], info["refiner_steps_run"]) == (47, 4)
    assert info["seeds"] == [123456, 123457, 123458, 123459]
    assert [a["adapter"].startswith("retro_cartoons_") for a in info["active_adapters"]] == [True]
    assert info["loras"][0]["file"].endswith("kohya/Retro-Cartoons.safetensors")
    meta = Image.open(io.BytesIO(httpx.get(task["outputs"][1]["url"]).content)).info
    assert meta["seed"] == "123457" and meta["refiner"] == "YES"
    assert meta["toonforge-tiny"] == "true"
    assert "Refiner switch at: 0.8" in meta["parameters"]
    assert "<lora:Retro-Cartoons:1>" in meta["parameters"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", "a dog in the rain"),
        ("negativePrompt", "blurry"),
        ("steps", 8),
        ("scale", 9),
        ("seed", "2"),
        ("highNoiseFrac", 0.5),
        ("stepsRefiner", 30),
        ("refiner", "--only_base_model"),
        ("scheduler", "DDIMScheduler"),
        ("scheduler", "LMSDiscreteScheduler"),
        ("scheduler", "DPMSolverMultistepScheduler"),
        ("scheduler", "PNDMScheduler"),
        ("scheduler", "DDPMScheduler"),
        ("scheduler", "EulerAncestralDiscreteScheduler"),
    ],
)
def test_every_input_matters(retro: Client, field: str, value: Any) -> None:
    base = small_image(retro)
    changed = small_image(retro, **{field: value})
    assert not np.array_equal(base, changed), field


def test_samples_width_height_and_same_seed(retro: Client) -> None:
    task = run_ok(retro, RETRO, {**SMALL, "samples": 3, "width": 96, "height": 64})
    imgs = images(task)
    assert len(imgs) == 3 and all(im.shape == (64, 96, 3) for im in imgs)
    first = small_image(retro)
    again = images(run_ok(retro, RETRO, SMALL))[0]
    assert np.array_equal(first, again), "same seed, same pixels"
    info = json.loads(run_ok(retro, RETRO, SMALL)["debugoutput"])
    assert info["reused"] is True, "base, LoRA and refiner stay loaded between tasks"


def test_bad_inputs_are_refused_before_queueing(retro: Client) -> None:
    for body, name in (
        ({**SMALL, "refiner": "maybe"}, "refiner"),
        ({**SMALL, "highNoiseFrac": 0}, "highNoiseFrac"),
        ({**SMALL, "scheduler": "KarrasVe"}, "scheduler"),
    ):
        data = retro.post(f"/v1/Run/{RETRO}", body).json()
        assert data["result"] is False and "taskid" not in data, data
        assert name in json.dumps(data["errors"]), data


def test_refiner_no_never_loads_the_refiner(tmp_path: Path) -> None:
    # A server of its own, so that nothing loaded the refiner before.
    srv = _server(tmp_path / "no-refiner")
    try:
        client = Client(srv.url, srv.keys)  # type: ignore[attr-defined]
        task = run_ok(client, RETRO, {**SMALL, "refiner": "--only_base_model"})
        info = json.loads(task["debugoutput"])
        assert info["refiner"] == "NO" and info["refiner_loaded"] is False
        assert info["refiner_steps_run"] == 0 and info["base_steps_run"] == SMALL["steps"]
        assert [p["part"].split(":")[0] for p in info["parts"]] == ["sdxl-base"]
        states = list((srv.data_dir / "state" / "loaded").glob("*.json"))
        parts = [p["part"] for s in states for p in json.loads(s.read_text())["parts"]]
        assert any(p.startswith("sdxl-base:") for p in parts)
        assert not any(p.startswith("sdxl-refiner:") for p in parts), parts
    finally:
        srv.stop()

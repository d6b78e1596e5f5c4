"""wiro/animate-diff end to end: HTTP request -> worker -> tiny AnimateDiff pipeline -> 0.mp4."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import imageio_ffmpeg
import numpy as np
import pytest
from websockets.sync.client import connect

from support import Client, Server, create_keys

TOOL = "wiro/animate-diff"
# The tool page's own curl request, verbatim.
SEED_PAGE_REQUEST = {
    "selectedModel": "",
    "selectedModelPrivate": "",
    "prompt": "Amidst the chaos of World War II, soldiers fight for freedom and endure hardships "
    "with courage. cinematic still. emotional, harmonious, vignette, highly detailed, high "
    "budget, bokeh, cinemascope, moody, epic, gorgeous, film grain, grainy",
    "negativePrompt": "blur, haze, deformed iris, deformed pupils, semi-realistic, cgi, 3d, "
    "render, sketch, cartoon, drawing, anime, art, mutated hands and fingers, deformed, "
    "distorted, disfigured, poorly drawn, bad anatomy, wrong anatomy, extra limb, missing limb, "
    "floating limbs, disconnected limbs, mutation, mutated, ugly, disgusting, amputation",
    "loraType": "FILE:169584",
    "frameNumber": 18,
    "steps": 16,
    "seed": "123456",
    "width": 512,
    "height": 512,
    "callbackUrl": "You can provide a callback URL; Wiro will send a POST request to it when the "
    "task is completed.",
}
SMALL = {"prompt": "a lighthouse at dusk", "frameNumber": 3, "steps": 2, "width": 64, "height": 64}
LORAS = [f"FILE:{n}" for n in (169584, 169585, 169578, 169579, 169583, 169582, 169581, 169580)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("animatediff"))
    srv.keys = create_keys(srv.env)  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Client:
    return Client(server.url, server.keys)  # type: ignore[attr-defined]


def decode(data: bytes) -> tuple[dict[str, Any], np.ndarray]:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(data)
        f.flush()
        gen = imageio_ffmpeg.read_frames(f.name)
        meta = next(gen)
        w, h = meta["size"]
        frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    return meta, np.stack(frames).astype(np.int16)


def video(client: Client, body: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    task = client.wait(client.run(TOOL, body)["taskid"], timeout=240)
    assert task["status"] == "task_postprocess_end", task
    assert task["pexit"] == "0", task["debugerror"]
    [out] = task["outputs"]
    assert (out["name"], out["contenttype"]) == ("0.mp4", "video/mp4")
    r = httpx.get(out["url"], timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert int(out["size"]) == len(r.content)
    meta, frames = decode(r.content)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p"), meta
    return task, frames


def test_tool_detail_lists_bases_with_trigger_words(client: Client) -> None:
    data = client.post("/v1/Tool/Detail", {"slugowner": "wiro", "slugproject": "animate-diff"})
    [tool] = data.json()["tool"]
    assert tool["engineready"] is True
    params = {p["id"]: p for group in tool["parameters"] for p in group["items"]}
    bases = {o["value"]: o for o in params["selectedModel"]["options"]}
    assert list(bases) == ["969", "959", "814", "485", "965"]
    assert bases["969"]["triggerwords"] == ["aodai", "3dcharacter", "3dcutecharacter", "chibi"]
    assert "gradient background" in bases["959"]["triggerwords"]
    assert bases["814"]["triggerwords"] == [] and bases["485"]["triggerwords"] == []
    assert len(bases["965"]["triggerwords"]) == 18
    assert params["selectedModel"]["default"] == "60"
    assert [o["value"] for o in params["loraType"]["options"]] == LORAS
    assert (params["frameNumber"]["min"], params["frameNumber"]["max"]) == (1, 32)


def test_small_clip_has_the_frames_and_size_asked_for(client: Client) -> None:
    task, frames = video(client, {**SMALL, "frameNumber": 5, "width": 64, "height": 96})
    assert frames.shape == (5, 96, 64, 3)
    info = json.loads(task["debugoutput"])
    assert info["base_model"] == "485"  # "60"/"" mean the documented default base
    assert info["frameNumber"] == 5 and info["motion_lora"] == "file_169584"
    assert task["parameters"]["selectedModel"] == "60"


def test_same_seed_same_video(client: Client) -> None:
    body = {**SMALL, "seed": "99"}
    _, a = video(client, body)
    _, b = video(client, body)
    _, c = video(client, {**body, "seed": "100"})
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 1


def test_every_motion_lora_gives_different_frames(client: Client) -> None:
    clips = [video(client, {**SMALL, "seed": "5", "loraType": lora})[1] for lora in LORAS]
    for i in range(len(clips)):
        for j in range(i + 1, len(clips)):
            assert np.abs(clips[i] - clips[j]).mean() > 0.5, (LORAS[i], LORAS[j])


def test_bad_frame_numbers_are_refused_and_queue_nothing(client: Client) -> None:
    before = int(client.run(TOOL, {**SMALL, "frameNumber": 1})["taskid"])
    for bad in (33, 0, 1000):
        r = client.post(f"/v1/Run/{TOOL}", {**SMALL, "frameNumber": bad}).json()
        assert r["result"] is False
        assert (
            r["errors"][0]["message"] == "Request parameter [frameNumber] must be between 1 and 32"
        )
    r = client.post(f"/v1/Run/{TOOL}", {**SMALL, "selectedModel": "123"}).json()
    assert r["result"] is False and "[selectedModel]" in r["errors"][0]["message"]
    after = int(client.run(TOOL, {**SMALL, "frameNumber": 1})["taskid"])
    assert after == before + 1  # nothing was queued in between
    for taskid in (before, after):
        assert client.wait(str(taskid), timeout=120)["pexit"] == "0"


def socket_progress(server: Server, token: str, stop_after: int) -> list[dict[str, Any]]:
    ws_url = server.url.replace("http", "ws", 1) + "/v1/socket"
    progress: list[dict[str, Any]] = []
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "task_info", "tasktoken": token}))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(progress) < stop_after:
            frame = json.loads(ws.recv(timeout=180))
            if frame["type"] == "task_output" and isinstance(frame["message"], dict):
                progress.append(frame["message"])
    return progress


def test_seed_page_request_is_accepted_and_kill_works_mid_clip(
    server: Server, client: Client
) -> None:
    # A long clip occupies the (single) worker...
    long = client.run(TOOL, {**SMALL, "frameNumber": 16, "steps": 150})
    # ...so the page's own request waits in the queue: accepted, recorded as the page sent it.
    page = client.run(TOOL, SEED_PAGE_REQUEST)
    queued = client.detail(page["taskid"])
    assert queued["status"] == "task_queue"
    params = queued["parameters"]
    for name in ("prompt", "negativePrompt", "loraType", "width", "height", "frameNumber"):
        assert params[name] == SEED_PAGE_REQUEST[name], name
    assert (params["selectedModel"], params["selectedModelPrivate"]) == ("60", "")
    assert (params["seed"], params["steps"]) == (123456, 16)
    cancelled = client.post("/v1/Task/Cancel", {"taskid": page["taskid"]}).json()
    assert cancelled["result"] is True and cancelled["tasklist"][0]["status"] == "task_cancel"

    progress = socket_progress(server, long["socketaccesstoken"], stop_after=2)
    assert [p["stepCurrent"] for p in progress] == ["1", "2"]
    assert {p["stepTotal"] for p in progress} == {"150"}
    r = client.post("/v1/Task/Kill", {"taskid": long["taskid"]}).json()
    assert r["result"] is True, r
    task = client.wait(long["taskid"], timeout=60)
    assert task["status"] == "task_cancel"
    assert task["outputs"] == []
    # The worker is free again at once.
    assert video(client, SMALL)[1].shape == (3, 64, 64, 3)


@pytest.mark.timeout(1800)
def test_seed_page_request_runs_to_success(client: Client) -> None:
    # The page's own request, unshrunk: 18 frames, 16 steps, 512x512 (about a minute here).
    task = client.wait(client.run(TOOL, SEED_PAGE_REQUEST)["taskid"], timeout=1800)
    assert task["pexit"] == "0", task["debugerror"]
    [out] = task["outputs"]
    meta, frames = decode(httpx.get(out["url"], timeout=60).content)
    assert meta["codec"] == "h264" and frames.shape == (18, 512, 512, 3)

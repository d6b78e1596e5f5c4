"""Previews while sampling, through the WebSocket: a real worker (tiny stand-in weights) runs
in this process on the in-process app's database."""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image

from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import TaskPreview
from toonforge.testing import InProcess

CARTOON = "/v1/Run/futurist/CartoonMix%20v1.0"


def _frames(ws: Any) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = ws.receive_json()
        frames.append(frame)
        if lc.is_terminal(frame["type"]):
            return frames


def _run_one_task(inproc: InProcess) -> threading.Thread:
    from toonforge.engine.runtime import EngineRuntime
    from toonforge.worker.main import Worker

    settings = inproc.services.settings.model_copy(
        update={"tiny_dir": Path(os.environ["TOONFORGE_TEST_TINY_DIR"]), "device": "cpu"}
    )
    worker = Worker(inproc.services, EngineRuntime(settings))
    thread = threading.Thread(target=worker.run_once, daemon=True)
    thread.start()
    return thread


def _wait_for_request(inproc: InProcess, taskid: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with inproc.services.sessions() as session:
            if session.get(TaskPreview, int(taskid)) is not None:
                return
        time.sleep(0.05)
    raise AssertionError("the subscriber's request for previews never reached the database")


def test_a_subscriber_with_previews_gets_images_and_one_without_gets_none(
    inproc: InProcess,
) -> None:
    body = {"samples": 1, "steps": 8, "width": 128, "height": 64, "prompt": "a red fox"}
    run = inproc.client.ok(CARTOON, body)
    token = run["socketaccesstoken"]
    with (
        inproc.http.websocket_connect("/v1/socket") as plain,
        inproc.http.websocket_connect("/v1/socket") as watching,
    ):
        plain.send_json({"type": "task_info", "tasktoken": token})
        watching.send_json({"type": "task_info", "tasktoken": token, "previews": True})
        assert plain.receive_json()["type"] == lc.QUEUE
        assert watching.receive_json()["type"] == lc.QUEUE
        _wait_for_request(inproc, run["taskid"])
        worker = _run_one_task(inproc)
        seen = _frames(watching)
        unseen = _frames(plain)
        worker.join(timeout=120)
    assert seen[-1]["type"] == lc.POSTPROCESS_END and seen[-1]["message"], seen[-1]
    with_preview = [f for f in seen if isinstance(f["message"], dict) and "preview" in f["message"]]
    assert with_preview, [f["type"] for f in seen]
    for frame in with_preview:
        message = frame["message"]
        assert frame["type"] == lc.OUTPUT
        assert int(message["previewStep"]) <= int(message["stepCurrent"])
        head, _, data = message["preview"].partition(",")
        assert head == "data:image/webp;base64"
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        # The latent's own size (an eighth of 128 x 64): the request's 2:1 aspect.
        assert image.size == (16, 8)
    assert [f["type"] for f in unseen] == [f["type"] for f in seen]
    assert not any(isinstance(f["message"], dict) and "preview" in f["message"] for f in unseen)

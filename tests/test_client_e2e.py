"""toonforge.client and `toonforge run` against a real `toonforge serve` (tiny weights): runs
that wait on the WebSocket (or by polling), downloads, kill, errors, key-only projects, and
Run's `Prefer: wait`. One server for the module; small jobs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from toonforge.client import ApiError, AsyncClient, Client, Event
from toonforge.testing import SMALL, Keys, ServeProcess, signed_headers

TOOL = "futurist/CartoonMix v1.0"
TWO = {**SMALL, "samples": 2}
# Long enough on the tiny model to be caught mid-run.
SLOW = {**SMALL, "steps": 150, "width": 256, "height": 256, "samples": 2}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    srv = ServeProcess(tmp_path_factory.mktemp("client-e2e"))
    srv.create_keys()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def tf(server: ServeProcess) -> Iterator[Client]:
    with Client(server.url + "/v1", server.keys["apikey"], server.keys["apisecret"]) as client:
        yield client


def assert_pngs(paths: list[Path], task: Any, folder: Path) -> None:
    assert [p.name for p in paths] == ["0.png", "1.png"]
    for path, output in zip(paths, task.outputs, strict=True):
        assert path.parent == folder
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) == output.size


def test_run_waits_on_the_socket_and_downloads(tf: Client, tmp_path: Path) -> None:
    events: list[Event] = []
    task = tf.run(TOOL, TWO, on_event=events.append)
    assert task.succeeded and task.done, task.debugerror
    assert [o.name for o in task.outputs] == ["0.png", "1.png"]
    assert task.tool == TOOL and task.parameters["samples"] == 2
    types = [e.type for e in events]
    assert types[-1] == "task_postprocess_end"
    assert any(e.progress == (3, 3) for e in events), types
    paths = tf.download(task, tmp_path / "out")
    assert_pngs(paths, task, tmp_path / "out")
    assert tf.list_tasks(limit=1).tasks[0].id == task.id


def test_polling_when_the_socket_cannot_be_used(server: ServeProcess, tf: Client) -> None:
    tf._follow_socket = lambda *_args: False  # type: ignore[method-assign]
    events: list[Event] = []
    task = tf.run(TOOL, SMALL, on_event=events.append)
    assert task.succeeded and len(task.outputs) == 1
    assert events and events[-1].type == "task_postprocess_end"


def test_async_client(server: ServeProcess, tmp_path: Path) -> None:
    async def scenario() -> tuple[Any, list[Path], list[str]]:
        seen: list[str] = []

        async def on_event(event: Event) -> None:
            seen.append(event.type)

        keys = server.keys
        async with AsyncClient(server.url + "/v1", keys["apikey"], keys["apisecret"]) as tf:
            task = await tf.run(TOOL, TWO, on_event=on_event)
            paths = await tf.download(task, tmp_path)
            assert (await tf.detail(task.socketaccesstoken)).id == task.id
            deleted = await tf.delete_outputs(task)
            assert deleted.raw.get("outputs") == [] or deleted.id == task.id
            return task, paths, seen

    task, paths, seen = asyncio.run(scenario())
    assert task.succeeded
    assert_pngs(paths, task, tmp_path)
    assert seen[-1] == "task_postprocess_end"


def test_kill_while_running(tf: Client) -> None:
    killed: list[str] = []

    def on_event(event: Event) -> None:
        if event.progress is not None and not killed:
            killed.append(tf.kill(str(event.raw["id"])).status)

    task = tf.run(TOOL, SLOW, on_event=on_event, timeout=120)
    assert killed, "no progress was seen"
    assert task.status == "task_cancel" and task.outputs == [] and not task.succeeded


def test_errors_and_key_only_projects(server: ServeProcess) -> None:
    keys = server.create_keys(mode="key", name="key-only")
    with Client(server.url + "/v1", keys["apikey"]) as tf:
        task = tf.run("futurist/cartoonmix-v1-0", SMALL)
        assert task.succeeded
        with pytest.raises(ApiError) as err:
            tf.run(TOOL, {**SMALL, "steps": 0})
        assert err.value.code == 0 and "[steps]" in err.value.message
        with pytest.raises(ApiError) as err:
            tf.kill(task)
        assert err.value.code == 1 and err.value.message.startswith("Task could not be killed")
    wrong = Client(server.url + "/v1", server.keys["apikey"], "wrong-secret")
    with pytest.raises(ApiError) as err:
        wrong.detail(task.id)
    assert err.value.status == 401 and err.value.message == "Project authorization is not valid."


def test_run_with_prefer_wait_answers_with_the_finished_task(server: ServeProcess) -> None:
    headers = {**signed_headers(Keys.from_dict(server.keys)), "Prefer": "wait=60"}
    r = httpx.post(
        f"{server.url}/v1/Run/futurist/CartoonMix%20v1.0",
        content=json.dumps(SMALL),
        headers=headers,
        timeout=90,
    )
    data = r.json()
    assert r.status_code == 200 and data["result"] is True, data
    assert r.headers["Preference-Applied"] == "wait=60"
    (task,) = data["tasklist"]
    assert task["id"] == data["taskid"] and task["status"] == "task_postprocess_end"
    assert task["pexit"] == "0" and [o["name"] for o in task["outputs"]] == ["0.png"]


def test_cli_run_saves_the_files(server: ServeProcess, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOONFORGE_")},
        "TOONFORGE_URL": server.url + "/v1",
        "TOONFORGE_API_KEY": server.keys["apikey"],
        "TOONFORGE_API_SECRET": server.keys["apisecret"],
        "TOONFORGE_CREDENTIALS_FILE": str(tmp_path / "none.toml"),
    }
    inputs = [f"{k}={v}" for k, v in TWO.items()]
    out = tmp_path / "cats"
    done = subprocess.run(
        [sys.executable, "-m", "toonforge", "run", TOOL, *inputs, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "task_postprocess_end" in lines[0] and lines[1:] == [
        str(out / "0.png"),
        str(out / "1.png"),
    ]
    assert all((out / n).read_bytes().startswith(PNG) for n in ("0.png", "1.png"))
    taskid = lines[0].split()[1]
    listed = subprocess.run(
        [sys.executable, "-m", "toonforge", "tasks", "show", taskid, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["id"] == taskid


def test_cli_ctrl_c_kills_the_task(server: ServeProcess, tf: Client, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOONFORGE_")},
        "TOONFORGE_URL": server.url + "/v1",
        "TOONFORGE_API_KEY": server.keys["apikey"],
        "TOONFORGE_API_SECRET": server.keys["apisecret"],
        "TOONFORGE_CREDENTIALS_FILE": str(tmp_path / "none.toml"),
    }
    before = tf.list_tasks(limit=1).tasks[0].id
    inputs = [f"{k}={v}" for k, v in SLOW.items()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "toonforge", "run", TOOL, *inputs, "--out", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            latest = tf.list_tasks(limit=1).tasks[0]
            if latest.id != before and latest.status == "task_output":
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the task was not seen running")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert f"task {latest.id} killed" in err
    assert tf.detail(latest.id).status == "task_cancel"
    assert not list(tmp_path.glob("*.png"))

"""Test support: real toonforge servers on loopback and a signed client for them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from toonforge.api.auth import signature_for

TERMINAL = ("task_postprocess_end", "task_cancel")
CARTOON = "futurist/CartoonMix%20v1.0"
# A CartoonMix job that takes a fraction of a second on the tiny stand-ins.
SMALL = {
    "prompt": "a cat",
    "negativePrompt": "",
    "samples": 1,
    "steps": 3,
    "width": 64,
    "height": 64,
    "seed": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(data_dir: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOONFORGE_")}
    env.update(
        HF_HUB_OFFLINE="1",
        TOONFORGE_DATA_DIR=str(data_dir),
        TOONFORGE_TINY="true",
        # Tiny weights are built once per test run and shared by every server.
        TOONFORGE_TINY_DIR=os.environ.get("TOONFORGE_TEST_TINY_DIR", ""),
    )
    if not env["TOONFORGE_TINY_DIR"]:
        del env["TOONFORGE_TINY_DIR"]
    if database_url:
        env["TOONFORGE_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def create_keys(env: dict[str, str], mode: str = "signature", **opts: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "toonforge", "keys", "create", "--json", "--mode", mode]
    for k, v in opts.items():
        cmd += [f"--{k.replace('_', '-')}", v]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


class Server:
    """`toonforge serve` in a subprocess, exactly as a user starts it."""

    def __init__(
        self, data_dir: Path, database_url: str | None = None, workers: int = 1, **extra_env: str
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = base_env(
            data_dir,
            database_url,
            TOONFORGE_PORT=str(self.port),
            TOONFORGE_WORKERS=str(workers),
            **extra_env,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"serve-{self.port}.log"

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "toonforge", "serve"],
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def spawn_worker(self, **extra_env: str) -> subprocess.Popen[bytes]:
        log = self.log_path.open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "toonforge", "worker"],
            env={**self.env, **extra_env},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


class Client:
    """Signs every request the way the seed pages' shell snippet does."""

    def __init__(self, base_url: str, keys: dict[str, Any]) -> None:
        self.base_url = base_url
        self.keys = keys
        self.http = httpx.Client(base_url=base_url, timeout=60)

    def headers(self, nonce: str | None = None) -> dict[str, str]:
        nonce = nonce or str(time.time_ns() // 1000 + int(uuid.uuid4().int % 1000))
        h = {"x-api-key": self.keys["apikey"]}
        if self.keys.get("mode", "signature") == "signature":
            h["x-nonce"] = nonce
            h["x-signature"] = signature_for(self.keys["apikey"], self.keys["apisecret"], nonce)
        return h

    def post(self, path: str, body: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        # The seed pages send JSON text under a multipart header; do the same.
        headers = {**self.headers(), "Content-Type": "multipart/form-data", **kw.pop("headers", {})}
        return self.http.post(path, content=json.dumps(body or {}), headers=headers, **kw)

    def run(self, tool: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.post(f"/v1/Run/{tool}", body)
        data = r.json()
        assert r.status_code == 200 and data["result"] is True, data
        return dict(data)

    def detail(self, taskid: str) -> dict[str, Any]:
        data = self.post("/v1/Task/Detail", {"taskid": taskid}).json()
        assert data["result"] is True, data
        return dict(data["tasklist"][0])

    def wait(
        self, taskid: str, timeout: float = 300, until: tuple[str, ...] = TERMINAL
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.detail(taskid)
            if task["status"] in until:
                return task
            time.sleep(0.1)
        raise AssertionError(f"task {taskid} not in {until} after {timeout}s: {task}")


def run_ok(client: Client, tool: str, body: dict[str, Any]) -> dict[str, Any]:
    """Run `tool` and wait: the task must end in success."""
    task = client.wait(client.run(tool, body)["taskid"])
    assert task["status"] == "task_postprocess_end", task
    assert task["pexit"] == "0", task["debugerror"]
    return task


def images(task: dict[str, Any]) -> list[Any]:
    """The task's PNG outputs, fetched over HTTP, as int16 RGB arrays (signed, so that
    differences do not wrap)."""
    import io

    import numpy as np
    from PIL import Image

    out = []
    for o in task["outputs"]:
        r = httpx.get(o["url"], timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert int(o["size"]) == len(r.content)
        out.append(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16))
    return out

"""Test support: real toonforge servers on loopback and a signed client for them."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from toonforge.api.auth import signature_for
from toonforge.testing import CARTOON, SMALL, ServeProcess, base_env, create_keys, free_port

# Re-exported for the test modules (shared with bench/).
__all__ = [
    "CARTOON",
    "SMALL",
    "Client",
    "Server",
    "base_env",
    "create_keys",
    "free_port",
    "images",
    "run_ok",
    "workers_paused",
]

TERMINAL = ("task_postprocess_end", "task_cancel")


# `toonforge serve` in a subprocess; the package's own helper, shared with bench/.
Server = ServeProcess


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


__all__ = ["Server", "base_env", "create_keys", "free_port"]


@contextmanager
def workers_paused(server: Server) -> Iterator[None]:
    """Hold every worker of `server` still (SIGSTOP) and let them go on afterwards: a task
    seen running stays running, with no race against its last step, while the test acts.
    A worker is never held in the middle of a write transaction (its locks would make the
    test's own writes wait): if the database's write lock (SQLite) or a task row (PostgreSQL)
    is held, the workers go on for a moment and are held again."""
    pids = server.children()
    assert pids, "the server has no worker to hold"
    url = server.env.get("TOONFORGE_DATABASE_URL") or (
        f"sqlite:///{server.env['TOONFORGE_DATA_DIR']}/toonforge.db"
    )
    for _ in range(200):
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        if _no_write_held(url):
            break
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def _no_write_held(url: str) -> bool:
    """No other connection holds a write lock that a write of the test would wait for."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    sqlite = url.startswith("sqlite")
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 0} if sqlite else {})
    try:
        with engine.connect() as conn:
            if sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(text("SELECT id FROM tasks FOR UPDATE NOWAIT")).all()
            conn.rollback()
        return True
    except OperationalError:
        return False
    finally:
        engine.dispose()

"""More than one machine: an API process and two workers that share no folder, only one
PostgreSQL database and one S3 bucket (moto's real S3 API server on loopback). Every task
finishes, its files download through the API (the redirect to a presigned URL followed) and
at their presigned URL, and a private model uploaded to the API reaches the worker that runs
it through the storage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from support import CARTOON, SMALL, Client, Server
from toonforge.testing import S3Server, base_env

pytestmark = pytest.mark.postgres

ANIMATE = "wiro/animate-diff"
CLIP = {"prompt": "a red kite", "frameNumber": 2, "steps": 2, "width": 64, "height": 64}


class Host:
    """A `toonforge worker` with a data folder of its own (a machine of its own)."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        data_dir.mkdir(parents=True)
        self.data_dir = data_dir
        self.log_path = data_dir / "worker.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "toonforge", "worker"],
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready for" in self.log():
                return
            assert self.proc.poll() is None, self.log()[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"worker not ready: {self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def cluster(
    tmp_path: Path, database_factory: Any, s3: S3Server
) -> Iterator[tuple[Server, list[Host], str]]:
    database_url = database_factory("postgres")
    bucket = s3.new_bucket()
    storage_env = s3.env(bucket, "outputs")
    api = Server(tmp_path / "api", database_url, workers=0, **storage_env)
    api.create_keys()
    api.start()
    hosts: list[Host] = []
    try:
        for name in ("worker-a", "worker-b"):
            # Exactly what a worker host needs: the database and the storage.
            env = base_env(tmp_path / name, database_url, **storage_env)
            hosts.append(Host(tmp_path / name, env))
        for host in hosts:
            host.wait_ready()
        yield api, hosts, bucket
    finally:
        for host in hosts:
            host.stop()
        api.stop()


def download(url: str) -> httpx.Response:
    r = httpx.get(url, timeout=30, follow_redirects=True)
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return r


def test_an_api_and_two_workers_share_only_the_database_and_the_storage(
    cluster: tuple[Server, list[Host], str], s3: S3Server
) -> None:
    api, hosts, bucket = cluster
    client = Client(api.url, api.keys)
    from toonforge.engine.tiny.sd15 import ensure_tiny_sd15

    checkpoint = ensure_tiny_sd15(Path(os.environ["TOONFORGE_TEST_TINY_DIR"])).checkpoint
    added = client.http.post(
        "/v1/PrivateModel/Add",
        headers=client.headers(),
        data={"name": "mine"},
        files={"file": ("mine.safetensors", checkpoint.read_bytes(), "application/octet-stream")},
    ).json()
    assert added["result"] is True, added
    model_id = added["models"][0]["id"]
    stored = s3.keys(bucket, "outputs/private_models/")
    assert len(stored) == 1 and stored[0].endswith(".safetensors")
    assert not (api.data_dir / "private_models" / f"{model_id}.safetensors").exists()

    taskids = [client.run(CARTOON, {**SMALL, "seed": str(i)})["taskid"] for i in range(6)]
    taskids.append(client.run(ANIMATE, {**CLIP, "selectedModelPrivate": model_id})["taskid"])
    tasks = [client.wait(t, timeout=600) for t in taskids]
    for task in tasks:
        assert task["status"] == "task_postprocess_end" and task["pexit"] == "0", task
        assert task["outputs"], task
        for out in task["outputs"]:
            assert out["url"].startswith(f"{s3.endpoint}/{bucket}/outputs/{task['uuid']}/")
            direct = download(out["url"])
            via_api = download(f"{api.url}/v1/File/{out['accesskey']}/{out['name']}")
            assert direct.content == via_api.content and len(direct.content) == int(out["size"])
            assert direct.headers["content-type"] == out["contenttype"]

    # Both workers ran tasks; each kept only its own copy of the private model, fetched
    # from the storage; no output was written to any data folder.
    engine = create_engine(api.env["TOONFORGE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            ran_by = conn.execute(text("SELECT id, worker_id FROM tasks")).all()
    finally:
        engine.dispose()
    pid_of = {str(row.id): row.worker_id.split(":")[1] for row in ran_by if row.worker_id}
    assert set(pid_of.values()) == {str(h.proc.pid) for h in hosts}, pid_of
    private_run_by = pid_of[taskids[-1]]
    for host in hosts:
        copy = host.data_dir / "private_models" / f"{model_id}.safetensors"
        if str(host.proc.pid) == private_run_by:
            assert copy.read_bytes() == checkpoint.read_bytes()
    for folder in [api.data_dir, *(h.data_dir for h in hosts)]:
        assert not list(folder.glob("outputs/**/*.png")), folder

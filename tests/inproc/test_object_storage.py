"""Object storage (TOONFORGE_STORAGE_URL): a local folder and an S3-compatible bucket (moto's
real S3 API server on loopback) hold outputs, uploads and private models alike; clients
fetch S3 objects at presigned (or public) URLs; InputOutputDelete and the retention period
delete the objects. The worker runs in this process (`Worker.run_once`) on the tiny weights.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from photo_toon import PHOTO_TOON

from toonforge.engine.runtime import EngineRuntime
from toonforge.services import build_services
from toonforge.settings import load_settings, parse_duration
from toonforge.storage import LocalStorage, StorageConfigError, open_storage
from toonforge.tasks.retention import sweep_once
from toonforge.testing import (
    CARTOON,
    S3_TEST_ENV,
    SMALL,
    InProcess,
    S3Server,
    SignedClient,
    in_process_app,
    new_project,
    settings_for_test,
    signed_headers,
)
from toonforge.worker.main import Worker
from toonforge.worker.task_files import fetch_task_files, read_upload


@pytest.fixture(params=["file", "s3"])
def storage_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage_options(
    storage_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any
) -> dict[str, Any]:
    """Settings for a storage of the test's own: a folder, or a new bucket (prefix `tf`)."""
    if storage_kind == "file":
        return {"storage_url": f"file://{tmp_path / 'store'}"}
    s3: S3Server = request.getfixturevalue("s3")
    for name, value in S3_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    return {"storage_url": f"s3://{s3.new_bucket()}/tf", "s3_endpoint_url": s3.endpoint}


def objects(app: InProcess, prefix: str = "") -> list[str]:
    """Every stored key under `prefix`, whatever the storage."""
    storage = app.services.storage
    if isinstance(storage, LocalStorage):
        root = storage.root
        return sorted(str(p.relative_to(root)) for p in (root / prefix).rglob("*") if p.is_file())
    client = storage.client  # type: ignore[attr-defined]
    full = f"{storage.prefix}/{prefix}"  # type: ignore[attr-defined]
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=storage.bucket,  # type: ignore[attr-defined]
        Prefix=full,
    )
    cut = len(storage.prefix) + 1  # type: ignore[attr-defined]
    return sorted(obj["Key"][cut:] for page in pages for obj in page.get("Contents", []))


@pytest.fixture
def make_app(
    tmp_path: Path, backend: str, database_factory: Any, storage_options: dict[str, Any]
) -> Iterator[Any]:
    """An in-process API on the test's storage (extra settings as keywords), and a worker."""
    stack: list[Any] = []

    def make(**extra: Any) -> tuple[InProcess, Worker]:
        settings = settings_for_test(
            tmp_path / f"data{len(stack)}",
            database_factory(backend),
            tiny_dir=Path(os.environ["TOONFORGE_TEST_TINY_DIR"]),
            public_url="http://testserver",
            **storage_options,
            **extra,
        )
        context = in_process_app(settings, dispatch_callbacks=False)
        http, services = context.__enter__()
        stack.append(context)
        keys = new_project(services)
        app = InProcess(http, services, keys, SignedClient(http, keys))
        return app, Worker(services, EngineRuntime(settings))

    yield make
    for context in reversed(stack):
        context.__exit__(None, None, None)


def run_task(app: InProcess, worker: Worker) -> dict[str, Any]:
    """Run a small CartoonMix task through the worker; its finished record."""
    taskid = app.client.ok(f"/v1/Run/{CARTOON}", SMALL)["taskid"]
    assert worker.run_once()
    task = app.client.ok("/v1/Task/Detail", {"taskid": taskid})["tasklist"][0]
    assert task["status"] == "task_postprocess_end" and task["pexit"] == "0", task
    return dict(task)


def fetch(app: InProcess, url: str) -> httpx.Response:
    """GET a file URL as a client would, following a redirect to the storage."""
    if url.startswith("http://testserver/"):
        r = app.http.get(url, follow_redirects=False)
        if r.status_code in (302, 307):
            assert r.headers["cache-control"] == "no-store"
            return httpx.get(r.headers["location"], timeout=30)
        return r
    return httpx.get(url, timeout=30)


# -- the storage itself --------------------------------------------------------------------


def test_storage_put_download_and_delete(
    storage_options: dict[str, Any], storage_kind: str, tmp_path: Path
) -> None:
    storage = open_storage(load_settings(data_dir=tmp_path / "d", **storage_options))
    assert storage.put("t1/a.png", b"png-bytes", "image/png") == 9
    big = os.urandom(3 * 1024 * 1024 + 5)
    assert storage.put_file("t1/sub/big.bin", io.BytesIO(big)) == len(big)
    storage.put("t10/other.txt", b"kept", "text/plain")
    assert storage.exists("t1/a.png") and not storage.exists("t1/none.png")
    target = tmp_path / "down" / "big.bin"
    assert storage.download("t1/sub/big.bin", target) and target.read_bytes() == big
    assert not storage.download("t1/none.png", tmp_path / "down" / "none")
    assert not (tmp_path / "down" / "none").exists()
    assert [p.name for p in target.parent.iterdir()] == ["big.bin"]  # no temporary left
    link = storage.direct_link("t1/a.png")
    if storage_kind == "file":
        assert link is None and storage.local_path("t1/a.png") is not None
    else:
        assert link is not None and storage.local_path("t1/a.png") is None
        assert abs(link.expires - (time.time() + 3600)) < 60
        got = httpx.get(link.url, timeout=30)
        assert got.status_code == 200 and got.content == b"png-bytes"
        assert got.headers["content-type"] == "image/png"
    storage.delete_prefix("t1")
    assert not storage.exists("t1/a.png") and not storage.exists("t1/sub/big.bin")
    assert storage.exists("t10/other.txt")  # a longer name with the same start is kept
    for bad in ("../x", "/abs", "a//b", "a/../../b"):
        with pytest.raises(ValueError):
            storage.put(bad, b"")


def test_a_public_base_url_replaces_presigned_urls(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in S3_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    bucket = s3.new_bucket()
    public = f"{s3.endpoint}/{bucket}"  # a bucket whose objects are readable by anyone
    storage = open_storage(
        load_settings(
            data_dir=tmp_path,
            storage_url=f"s3://{bucket}/p",
            s3_endpoint_url=s3.endpoint,
            storage_public_url=public + "/",
        )
    )
    storage.put("x/my file.png", b"abc", "image/png")
    s3.client().put_object_acl(Bucket=bucket, Key="p/x/my file.png", ACL="public-read")
    link = storage.direct_link("x/my file.png")
    assert link is not None and link.url == f"{public}/p/x/my%20file.png" and link.expires == 0
    assert httpx.get(link.url, timeout=30).content == b"abc"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "unknown scheme 'ftp'"),
        ("s3:///prefix", "expected s3://bucket/prefix"),
        ("file://otherhost/x", "expected file:///absolute/folder"),
    ],
)
def test_a_bad_storage_url_names_the_setting(url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(StorageConfigError) as exc:
        open_storage(load_settings(data_dir=tmp_path, storage_url=url))
    assert str(exc.value).startswith("TOONFORGE_STORAGE_URL:") and message in str(exc.value)


def test_durations() -> None:
    assert parse_duration("7d") == 7 * 86400 and parse_duration("12h") == 43200
    assert parse_duration("3600s") == 3600 and parse_duration("90") == 90
    assert parse_duration("") == 0 and parse_duration("1.5m") == 90
    for bad in ("7x", "abc", "-1h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError, match="output_retention"):
        load_settings(output_retention="soon")


# -- through the API and the worker --------------------------------------------------------


def test_uploads_are_stored_read_by_workers_and_deleted(
    make_app: Any, storage_kind: str, tmp_path: Path
) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "photo-toon.yaml").write_text(yaml.safe_dump(PHOTO_TOON))
    app, _ = make_app(extra_tools_dirs=[tools])
    r = app.http.post(
        "/v1/File/Upload",
        files={"file": ("in.png", b"\x89PNG-upload", "image/png")},
        headers=signed_headers(app.keys),
    )
    [item] = r.json()["list"]
    # The upload's URL is the API's (it is what Run's file inputs take), on either storage.
    assert item["url"].startswith("http://testserver/v1/File/")
    got = fetch(app, item["url"])
    assert got.status_code == 200 and got.content == b"\x89PNG-upload"
    assert got.headers["content-type"] == "image/png"
    assert objects(app, "uploads") == [f"uploads/{item['id']}/in.png"]
    run = app.client.ok("/v1/Run/acme/Photo-Toon", {"inputImage": item["id"]})
    params = app.client.ok("/v1/Task/Detail", {"taskid": run["taskid"]})["tasklist"][0]
    # A worker reads the input from the storage through the database, not from the API.
    assert read_upload(app.services, params["parameters"]["inputImage"]) == b"\x89PNG-upload"
    assert read_upload(app.services, item["id"]) == b"\x89PNG-upload"
    assert read_upload(app.services, "https://example.com/x.png") is None
    app.client.ok("/v1/Task/Cancel", {"taskid": run["taskid"]})
    app.client.ok("/v1/Task/InputOutputDelete", {"taskid": run["taskid"]})
    assert objects(app, "uploads") == []
    assert app.http.get(item["url"]).status_code == 404


def test_outputs_are_stored_linked_and_deleted(make_app: Any, storage_kind: str) -> None:
    app, worker = make_app()
    task = run_task(app, worker)
    [out] = task["outputs"]
    assert task["outputsexpiretime"] == "0"  # no retention period
    assert objects(app, task["uuid"]) == [f"{task['uuid']}/{out['name']}"]
    if storage_kind == "s3":
        endpoint = app.services.settings.s3_endpoint_url
        assert out["url"].startswith(f"{endpoint}/") and "X-Amz-Signature=" in out["url"]
        assert abs(int(out["urlexpiretime"]) - (time.time() + 3600)) < 60
    else:
        assert out["url"].startswith("http://testserver/v1/File/") and out["urlexpiretime"] == "0"
    png = fetch(app, out["url"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert len(png.content) == int(out["size"]) and png.headers["content-type"] == "image/png"
    # The API URL works on both storages (a redirect to the object on S3).
    api_url = f"http://testserver/v1/File/{out['accesskey']}/{out['name']}"
    assert fetch(app, api_url).content == png.content

    deleted = app.client.ok("/v1/Task/InputOutputDelete", {"taskid": task["id"]})
    assert deleted["tasklist"][0]["outputs"] == []
    assert objects(app, task["uuid"]) == []
    assert app.http.get(api_url).status_code == 404


def test_retention_deletes_old_outputs_in_the_background(make_app: Any, storage_kind: str) -> None:
    app, worker = make_app(output_retention="2s", retention_sweep_seconds=0.2)
    first = run_task(app, worker)
    [out] = first["outputs"]
    added = int(out["addedtime"])
    assert int(first["outputsexpiretime"]) in (added + 2, added + 3)
    assert objects(app, first["uuid"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task = app.client.ok("/v1/Task/Detail", {"taskid": first["id"]})["tasklist"][0]
        if not task["outputs"]:
            break
        time.sleep(0.1)
    assert task["outputs"] == [] and task["outputsexpiretime"] == "0"
    assert time.time() >= added + 2  # not before the period was over
    assert objects(app, first["uuid"]) == []
    api_url = f"http://testserver/v1/File/{out['accesskey']}/{out['name']}"
    assert app.http.get(api_url).status_code == 404
    # A newer task keeps its outputs until its own time comes.
    second = run_task(app, worker)
    assert second["outputs"] and objects(app, second["uuid"])


def test_a_sweep_takes_only_what_is_due(make_app: Any) -> None:
    app, worker = make_app(output_retention="1h", retention_sweep_seconds=3600)
    old, new = run_task(app, worker), run_task(app, worker)
    now = time.time()
    assert sweep_once(app.services, now=now) == 0  # nothing is an hour old
    # Two hours on, both are due: one batch of one, then the other, then nothing.
    assert sweep_once(app.services, now=now + 7200, batch=1) == 1
    assert sweep_once(app.services, now=now + 7200, batch=1) == 1
    assert sweep_once(app.services, now=now + 7200) == 0
    for task in (old, new):
        assert objects(app, task["uuid"]) == []
        shown = app.client.ok("/v1/Task/Detail", {"taskid": task["id"]})["tasklist"][0]
        assert shown["outputs"] == [] and shown["status"] == "task_postprocess_end"


def test_a_worker_host_copies_private_models_from_the_storage(
    make_app: Any, storage_kind: str, tmp_path: Path
) -> None:
    from toonforge.engine.tiny.sd15 import ensure_tiny_sd15

    app, _ = make_app()
    checkpoint = ensure_tiny_sd15(Path(os.environ["TOONFORGE_TEST_TINY_DIR"])).checkpoint
    r = app.http.post(
        "/v1/PrivateModel/Add",
        data={"name": "mine"},
        files={"file": ("mine.safetensors", checkpoint.read_bytes(), "application/octet-stream")},
        headers=signed_headers(app.keys),
    )
    [model] = r.json()["models"]
    [key] = objects(app, "private_models")
    # A worker on another host: the same database and storage, a data folder of its own.
    options = {
        "storage_url": app.services.settings.storage_url,
        "s3_endpoint_url": app.services.settings.s3_endpoint_url,
    }
    worker_settings = settings_for_test(
        tmp_path / "worker-host", app.services.settings.resolved_database_url, **options
    )
    worker_services = build_services(worker_settings, migrate=False)
    try:
        copy = worker_settings.data_dir / "private_models" / f"{model['id']}.safetensors"
        fetch_task_files(worker_services, {"selectedModelPrivate": model["id"]})
        assert copy.read_bytes() == checkpoint.read_bytes()
        fetch_task_files(worker_services, {"selectedModelPrivate": model["id"]})  # kept
        assert copy.is_file()
        app.client.ok("/v1/PrivateModel/Delete", {"id": model["id"]})
        assert objects(app, "private_models") == [] and key
        assert copy.is_file()  # the API cannot reach another host's folder...
        fetch_task_files(worker_services, {"selectedModelPrivate": model["id"]})
        assert not copy.exists()  # ...the worker drops its copy when a task asks for it
    finally:
        worker_services.close()

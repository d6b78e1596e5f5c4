"""File/Upload and file inputs of Run, as the official client sends them: a multipart `file`
answered with `list: [{id, name, contenttype, size, url}]`, then the file's URL (or id) in a
file input `{id}` or `{id}Url`. Tested with a tool of the test's own that declares one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from photo_toon import PHOTO_TOON

from toonforge.testing import (
    InProcess,
    SignedClient,
    in_process_app,
    new_project,
    settings_for_test,
    signed_headers,
)

LIMIT_MB = 0.01  # 10485 bytes
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 2000
RUN = "/v1/Run/acme/Photo-Toon"


@pytest.fixture
def app(tmp_path: Path, backend: str, database_factory: Any) -> Iterator[InProcess]:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "photo-toon.yaml").write_text(yaml.safe_dump(PHOTO_TOON))
    settings = settings_for_test(
        tmp_path / "data",
        database_factory(backend),
        extra_tools_dirs=[tools],
        upload_max_mb=LIMIT_MB,
    )
    with in_process_app(settings, dispatch_callbacks=False) as (http, services):
        keys = new_project(services)
        yield InProcess(http, services, keys, SignedClient(http, keys))


def upload(
    client: SignedClient,
    data: bytes = PNG,
    name: str = "photo.png",
    ctype: str = "image/png",
    **kw: Any,
) -> Any:
    return client.http.post(
        "/v1/File/Upload",
        files={"file": (name, data, ctype)},
        headers=signed_headers(client.keys),
        **kw,
    )


def uploaded(client: SignedClient, **kw: Any) -> dict[str, Any]:
    r = upload(client, **kw)
    data = r.json()
    assert r.status_code == 200 and data["result"] is True, data
    [item] = data["list"]
    return dict(item)


def error(r: Any, status: int = 200) -> str:
    assert r.status_code == status, r.text
    data = r.json()
    assert data["result"] is False, data
    return str(data["errors"][0]["message"])


def test_upload_answers_the_documented_list_and_serves_the_file(app: InProcess) -> None:
    item = uploaded(app.client, name="../my photo.png")
    assert set(item) >= {"id", "name", "contenttype", "size", "url"}
    assert item["name"] == "my_photo.png" and item["contenttype"] == "image/png"
    assert item["size"] == str(len(PNG)) and len(item["id"]) == 32
    assert item["url"].startswith("http://") and item["url"].endswith("/my_photo.png")
    got = app.http.get(item["url"])
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["content-type"] == "image/png"
    assert got.headers["x-content-type-options"] == "nosniff"
    # Stored with the outputs' storage.
    assert list((app.services.settings.storage_dir / "uploads").rglob("my_photo.png"))


def test_content_type_is_guessed_when_not_declared(app: InProcess) -> None:
    item = uploaded(app.client, name="notes.txt", data=b"hello", ctype="application/octet-stream")
    assert item["contenttype"] == "text/plain"


def test_key_only_projects_upload_too(app: InProcess) -> None:
    assert uploaded(app.project(mode="key"))["size"] == str(len(PNG))


def test_the_size_limit_is_a_setting_and_names_the_parameter(app: InProcess) -> None:
    message = (
        "Request parameter [file] is larger than 0.01 MB, the limit for uploads "
        "(TOONFORGE_UPLOAD_MAX_MB)"
    )
    assert error(upload(app.client, data=b"x" * 20_000), 413) == message
    too_long = upload(app.client, data=b"x" * 80_000)  # over the Content-Length guard
    assert error(too_long, 413) == message
    assert uploaded(app.client, data=b"x" * 10_000)["size"] == "10000"


def test_an_announced_length_over_the_limit_is_refused_before_anything_is_read(
    app: InProcess,
) -> None:
    def body() -> Iterator[bytes]:
        raise AssertionError("the body was read")
        yield b""

    headers = {"content-type": "multipart/form-data; boundary=x", "content-length": "99999999"}
    r = app.http.post(
        "/v1/File/Upload", content=body(), headers={**signed_headers(app.keys), **headers}
    )
    assert "larger than 0.01 MB" in error(r, 413)
    # Without credentials the answer is 401, from the headers alone.
    r = app.http.post("/v1/File/Upload", content=body(), headers=headers)
    assert r.status_code == 401


def test_a_body_without_length_is_limited_while_it_streams(app: InProcess) -> None:
    """Driven at the ASGI level: the TestClient would read the whole body up front."""
    boundary = "tfboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    chunks = [head, *([b"y" * 65536] * 1000), f"\r\n--{boundary}--\r\n".encode()]  # 64 MB
    read: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        read.append(1)
        more = len(read) < len(chunks)
        return {"type": "http.request", "body": chunks[len(read) - 1], "more_body": more}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = {
        **signed_headers(app.keys),
        "content-type": f"multipart/form-data; boundary={boundary}",
    }
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/File/Upload",
        "raw_path": b"/v1/File/Upload",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(app.http.app(scope, receive, send))
    [start, body] = [m for m in sent if m["type"].startswith("http.response")][:2]
    assert start["status"] == 413
    assert json.loads(body["body"])["errors"][0]["message"].startswith(
        "Request parameter [file] is larger than 0.01 MB"
    )
    assert len(read) < 10, f"{len(read)} chunks read"


def test_missing_or_empty_file_and_folders(app: InProcess) -> None:
    headers = signed_headers(app.keys)
    r = app.http.post(
        "/v1/File/Upload", data={"name": "x"}, files={"other": ("a.png", PNG)}, headers=headers
    )
    assert error(r) == "Request parameter [file] required"
    r = app.http.post("/v1/File/Upload", json={"file": "x"}, headers=signed_headers(app.keys))
    assert error(r) == "Request parameter [file] required (send multipart/form-data)"
    assert error(upload(app.client, data=b"")) == "Request parameter [file] is empty"
    r = app.http.post(
        "/v1/File/Upload",
        files={"file": ("a.png", PNG, "image/png")},
        data={"folderid": "f1"},
        headers=signed_headers(app.keys),
    )
    assert error(r) == "Request parameter [folderid] is not supported: this server has no folders"
    assert app.http.post("/v1/File/Upload", files={"file": ("a.png", PNG)}).status_code == 401


def task_of(client: SignedClient, taskid: str) -> dict[str, Any]:
    return dict(client.ok("/v1/Task/Detail", {"taskid": taskid})["tasklist"][0])


def test_run_takes_an_upload_by_id_or_by_url(app: InProcess) -> None:
    item = uploaded(app.client)
    by_id = app.client.ok(RUN, {"inputImage": item["id"]})
    assert task_of(app.client, by_id["taskid"])["parameters"]["inputImage"] == item["url"]
    # The multipart habit of the hosted docs: both fields, one empty.
    by_url = app.client.ok(RUN, {"inputImage": "", "inputImageUrl": item["url"]})
    params = task_of(app.client, by_url["taskid"])["parameters"]
    assert params["inputImage"] == item["url"] and "inputImageUrl" not in params
    # The MCP server's way: the URL directly in the input.
    direct = app.client.ok(RUN, {"inputImage": item["url"], "styleImageUrl": item["url"]})
    params = task_of(app.client, direct["taskid"])["parameters"]
    assert params["inputImage"] == params["styleImage"] == item["url"]


def test_run_keeps_other_http_urls_and_refuses_anything_else(app: InProcess) -> None:
    run = app.client.ok(RUN, {"inputImageUrl": "https://example.com/cat.jpg"})
    assert (
        task_of(app.client, run["taskid"])["parameters"]["inputImage"]
        == "https://example.com/cat.jpg"
    )
    assert error(app.client.post(RUN, {"inputImage": "cat.jpg"})) == (
        "Request parameter [inputImage] must be the id or URL of a file sent to File/Upload, "
        "or an http(s) URL"
    )
    assert error(app.client.post(RUN, {"prompt": "x"})) == "Request parameter [inputImage] required"
    assert error(
        app.client.post(
            RUN,
            {"inputImage": "https://a.example/1.png", "inputImageUrl": "https://a.example/2.png"},
        )
    ) == (
        "Request parameter [inputImage] is given twice: send it in [inputImage] or [inputImageUrl]"
    )


def test_another_project_cannot_use_the_upload(app: InProcess) -> None:
    item = uploaded(app.client)
    other = app.project()
    for body in ({"inputImage": item["id"]}, {"inputImageUrl": item["url"]}):
        assert error(other.post(RUN, body)).startswith("Request parameter [inputImage] file '")
        assert error(other.post(RUN, body)).endswith("' not found in this project")
    unknown = "0" * 32
    assert error(app.client.post(RUN, {"inputImage": unknown})) == (
        f"Request parameter [inputImage] file '{unknown}' not found in this project"
    )


def test_input_output_delete_removes_the_uploads_the_task_used(app: InProcess) -> None:
    used = uploaded(app.client)
    kept = uploaded(app.client, name="kept.png")
    run = app.client.ok(RUN, {"inputImage": used["id"]})
    refused = app.client.post("/v1/Task/InputOutputDelete", {"tasktoken": run["socketaccesstoken"]})
    assert error(refused) == "Task must be completed or cancelled before deleting files"
    assert app.http.get(used["url"]).status_code == 200
    app.client.ok("/v1/Task/Cancel", {"taskid": run["taskid"]})
    app.client.ok("/v1/Task/InputOutputDelete", {"tasktoken": run["socketaccesstoken"]})
    assert app.http.get(used["url"]).status_code == 404
    assert not list((app.services.settings.storage_dir / "uploads" / used["id"]).glob("*"))
    assert error(app.client.post(RUN, {"inputImage": used["id"]})).endswith(
        "not found in this project"
    )
    # Idempotent, and an upload no task used stays.
    app.client.ok("/v1/Task/InputOutputDelete", {"tasktoken": run["socketaccesstoken"]})
    assert app.http.get(kept["url"]).status_code == 200
    assert app.client.ok(RUN, {"inputImage": kept["id"]})["result"] is True


def test_tool_detail_shows_the_file_inputs(app: InProcess) -> None:
    [tool] = app.client.ok("/v1/Tool/Detail", {"slugowner": "acme", "slugproject": "photo-toon"})[
        "tool"
    ]
    items = {i["id"]: i for i in tool["parameters"][0]["items"]}
    assert items["inputImage"]["type"] == "fileinput" and items["inputImage"]["required"] is True
    assert "inputImageUrl" in items["inputImage"]["note"]

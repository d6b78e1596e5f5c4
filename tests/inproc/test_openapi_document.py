"""The OpenAPI document is the contract: bodies, authentication, answers, the WebSocket, and
the /docs and /redoc pages that show it without any outside asset."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from fastapi import FastAPI
from openapi_spec_validator import validate
from photo_toon import PHOTO_TOON
from sqlalchemy import update

from toonforge.api.openapi import PUBLIC, SIGNED, app_routes, build_openapi
from toonforge.api.routes_playground import ASSET_ROUTE as PLAYGROUND_ASSETS
from toonforge.api.routes_playground import PAGE_PATH as PLAYGROUND_PAGE
from toonforge.catalog import Manifest
from toonforge.services import Services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.db import DB_UNAVAILABLE
from toonforge.tasks.models import Task
from toonforge.testing import (
    SignedClient,
    in_process_app,
    new_project,
    settings_for_test,
    signed_headers,
)

OPERATIONS = ("get", "head", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Services]]:
    """The document does not depend on the database: one app on SQLite for the module."""
    settings = settings_for_test(tmp_path_factory.mktemp("openapi") / "data")
    with in_process_app(settings, dispatch_callbacks=False) as pair:
        yield pair


@pytest.fixture(scope="module")
def doc(app: tuple[Any, Services]) -> dict[str, Any]:
    r = app[0].get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in OPERATIONS:
                yield path, method, op


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = doc["components"]["schemas"][name]
    return node


def test_the_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"].startswith("3.1")


def test_every_post_has_a_request_body_and_json_comes_first(doc: dict[str, Any]) -> None:
    posts = [(p, op) for p, m, op in operations(doc) if m == "post"]
    assert len(posts) >= 14
    for path, op in posts:
        content = op["requestBody"]["content"]
        media = list(content)
        if media != ["multipart/form-data"]:  # the uploads are multipart only
            assert media[0] == "application/json", path
            assert {"application/x-www-form-urlencoded", "multipart/form-data"} <= set(media)
            assert "primary" in op["requestBody"]["description"]
        for m in media:
            assert resolve(doc, content[m]["schema"])["type"] == "object", (path, m)


def _run_schema(doc: dict[str, Any], m: Manifest) -> dict[str, Any]:
    path = f"/v1/Run/{m.cleanslugowner}/{m.cleanslug}"
    assert path in doc["paths"], path
    body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return resolve(doc, body["schema"])


def test_a_run_path_per_catalog_tool_with_the_manifest_inputs(
    doc: dict[str, Any], app: tuple[Any, Services]
) -> None:
    catalog = list(app[1].catalog)
    assert len(catalog) == 5
    runs = [p for p in doc["paths"] if p.startswith("/v1/Run/")]
    assert sorted(runs) == sorted(f"/v1/Run/{m.cleanslugowner}/{m.cleanslug}" for m in catalog)
    assert "/v1/Run/{owner}/{model}" not in doc["paths"]
    for m in catalog:
        schema = _run_schema(doc, m)
        props = schema["properties"]
        assert "callbackUrl" in props
        # A required file input may come as `{name}Url`: see the file inputs' test.
        assert schema.get("required", []) == [
            i.name for i in m.inputs if i.required and not i.is_file
        ]
        for spec in m.inputs:
            prop = props[spec.name]
            assert prop["default"] == spec.default, (m.key, spec.name)
            if spec.seed:
                continue
            if spec.type in ("number", "float", "range"):
                as_number, as_text = prop["anyOf"]
                assert as_number["type"] == ("integer" if spec.integer else "number")
                assert as_number.get("minimum") == spec.min
                assert as_number.get("maximum") == spec.max
                assert as_number.get("multipleOf") == spec.multiple_of
                assert as_text["type"] == "string"  # "scale": "4"
            elif spec.type == "select" and spec.options:
                assert {o.value for o in spec.options} <= set(prop["enum"])
            elif spec.max_length is not None:
                assert prop["maxLength"] == spec.max_length


def test_the_manifest_bounds_are_in_the_documented_run_bodies(doc: dict[str, Any]) -> None:
    cartoon = doc["components"]["schemas"]["Run.futurist.cartoonmix-v1-0"]["properties"]
    assert cartoon["steps"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 150}
    assert cartoon["width"]["anyOf"][0]["multipleOf"] == 8
    assert cartoon["scheduler"]["default"] == "EulerDiscreteScheduler"
    video = doc["components"]["schemas"]["Run.wiro.animate-diff"]["properties"]
    assert video["frameNumber"]["anyOf"][0]["maximum"] == 32
    assert "60" in video["selectedModel"]["enum"]  # the page's default, outside its options


def test_defaults_and_examples_satisfy_the_documented_run_bodies(
    doc: dict[str, Any], app: tuple[Any, Services]
) -> None:
    for m in app[1].catalog:
        schema = _run_schema(doc, m)
        jsonschema.validate({i.name: i.default for i in m.inputs}, schema)
        for example in m.inspire:
            jsonschema.validate(example, schema)
        # Numbers written as strings, as the hosted pages send them, are documented too.
        as_text = {i.name: str(i.default) for i in m.inputs}
        jsonschema.validate(as_text, schema)


def test_the_documented_run_example_is_accepted(
    doc: dict[str, Any], app: tuple[Any, Services]
) -> None:
    http, services = app
    client = SignedClient(http, new_project(services))
    for path, _, op in operations(doc):
        if path.startswith("/v1/Run/"):
            example = op["requestBody"]["content"]["application/json"]["example"]
            data = client.post(path, example).json()
            assert data["result"] is True, (path, data)


def test_security_schemes_signature_or_key(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    headers = {s["name"] for s in schemes.values() if s["type"] == "apiKey" and s["in"] == "header"}
    assert headers == {"x-api-key", "x-nonce", "x-signature"}
    assert SIGNED == [{"apiKey": [], "nonce": [], "signature": []}, {"apiKey": []}]
    public = {
        "/v1/Tool/List",
        "/v1/Tool/Detail",
        "/v1/Tool/Explore",
        "/v1/File/{accesskey}/{name}",
        "/healthz",
    }
    for path, method, op in operations(doc):
        assert op["security"] == (PUBLIC if path in public else SIGNED), (method, path)


def test_answers_are_the_real_ones_and_never_422(doc: dict[str, Any]) -> None:
    envelope = "#/components/schemas/Envelope"
    for path, method, op in operations(doc):
        codes = set(op["responses"])
        assert "422" not in codes, (method, path)
        assert {"200", "404", "413", "503"} <= codes, (method, path)
        if op["security"]:
            assert "401" in codes, (method, path)
        for code in codes - {"200"}:
            content = op["responses"][code].get("content")
            if method != "head":
                assert content["application/json"]["schema"] == {"$ref": envelope}, (path, code)
        if path.startswith("/v1/") and "File/{" not in path:
            answer = resolve(doc, op["responses"]["200"]["content"]["application/json"]["schema"])
            assert {"result", "errors"} <= set(answer["required"]), path
    assert "422" not in str(doc["paths"])
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_answer_fields_per_endpoint(doc: dict[str, Any]) -> None:
    def fields(path: str) -> set[str]:
        op = doc["paths"][path]["post"]
        schema = resolve(doc, op["responses"]["200"]["content"]["application/json"]["schema"])
        return set(schema["properties"])

    assert {"taskid", "socketaccesstoken"} <= fields("/v1/Run/futurist/cartoonmix-v1-0")
    assert {"total", "tasklist"} <= fields("/v1/Task/Detail")
    assert {"total", "tool"} <= fields("/v1/Tool/List")
    assert {"models"} <= fields("/v1/PrivateModel/List")
    task = doc["components"]["schemas"]["TaskRecord"]["properties"]
    assert {"status", "pexit", "outputs", "totalcost", "socketaccesstoken"} <= set(task)


def _served_pattern(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")


def test_the_document_and_the_app_agree(doc: dict[str, Any], app: tuple[Any, Services]) -> None:
    routes = app_routes(app[0].app)
    served = [(_served_pattern(p), m) for p, m in routes]
    for path, method, _ in operations(doc):
        assert any(pat.match(path) and m == method for pat, m in served), (method, path)
    # The document, its viewers, and the operators' endpoints (README "Operations").
    not_api = {"/openapi.json", "/docs", "/redoc", "/docs/assets/{name}", "/readyz", "/metrics"}
    not_api |= {PLAYGROUND_PAGE, PLAYGROUND_ASSETS}  # the playground page and its assets
    documented = {(p, m) for p, m, _ in operations(doc)}
    for path, method in routes - {(p, m) for p in not_api for m in ("get", "head")}:
        if method == "websocket":
            assert doc["x-websocket"]["path"] == path
        elif path == "/v1/Run/{owner}/{model}":
            assert any(p.startswith("/v1/Run/") for p, _ in documented)
        elif method == "head" and path == "/healthz":
            continue  # Starlette answers HEAD on every GET route
        else:
            assert (path, method) in documented, (method, path)


def test_an_endpoint_is_documented_only_when_the_app_has_it(app: tuple[Any, Services]) -> None:
    catalog = app[1].catalog
    bare = FastAPI()
    assert build_openapi(bare, catalog)["paths"] == {}

    def answer() -> dict[str, Any]:
        return {"result": True, "errors": []}

    for path in ("/v1/Task/List", "/v1/Tool/Explore", "/v1/File/Upload"):
        bare.add_api_route(path, answer, methods=["POST"])
    paths = build_openapi(bare, catalog)["paths"]
    assert set(paths) == {"/v1/Task/List", "/v1/Tool/Explore", "/v1/File/Upload"}
    assert "multipart/form-data" in paths["/v1/File/Upload"]["post"]["requestBody"]["content"]
    task_list = paths["/v1/Task/List"]["post"]["requestBody"]["content"]["application/json"]
    assert task_list["schema"] == {"$ref": "#/components/schemas/TaskListBody"}
    assert "x-websocket" not in build_openapi(bare, catalog)


def test_the_websocket_is_described(doc: dict[str, Any]) -> None:
    ws = doc["x-websocket"]
    assert ws["path"] == "/v1/socket"
    assert "task_postprocess_end" in ws["terminal"]
    send = resolve(doc, ws["send"]["task_info"])
    assert send["properties"]["type"]["const"] == "task_info"
    frame = resolve(doc, ws["receive"]["event"])
    assert {"type", "id", "tasktoken", "message", "result"} <= set(frame["properties"])
    text = doc["info"]["description"]
    assert "/v1/socket" in text and '"type": "task_info"' in text and "task_output" in text


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_work_offline(app: tuple[Any, Services], page: str) -> None:
    http = app[0]
    r = http.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"(https?:)?//", r.text), "the page names an outside address"
    parser = _Assets()
    parser.feed(r.text)
    assert len(parser.urls) >= 2  # the script and the favicon (and Swagger UI's stylesheet)
    for url in parser.urls:
        assert url.startswith("/"), url
        asset = http.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    assert "/openapi.json" in r.text
    assert http.get("/docs/assets/nothing.js").status_code == 404


def test_the_assets_are_the_ones_the_package_ships() -> None:
    from toonforge.api.openapi import ASSETS, assets_dir

    for name in ASSETS:
        assert (Path(assets_dir()) / name).is_file(), name


# --------------------------------------------------------------------------------------------
# What the app really answers, checked against the document: every answer below validates
# against its documented schema, and every field of a documented record is in the document.

PHOTO_RUN = "/v1/Run/acme/photo-toon"


@pytest.fixture(scope="module")
def files_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Services]]:
    """An app whose catalog also has a tool with file inputs (no bundled tool has one)."""
    folder = tmp_path_factory.mktemp("openapi-files")
    tools = folder / "tools"
    tools.mkdir()
    (tools / "photo-toon.yaml").write_text(yaml.safe_dump(PHOTO_TOON))
    settings = settings_for_test(folder / "data", extra_tools_dirs=[tools])
    with in_process_app(settings, dispatch_callbacks=False) as pair:
        yield pair


@pytest.fixture(scope="module")
def files_doc(files_app: tuple[Any, Services]) -> dict[str, Any]:
    return dict(files_app[0].get("/openapi.json").json())


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def undocumented(
    doc: dict[str, Any], schema: dict[str, Any], value: Any, at: str = ""
) -> list[str]:
    """Fields of `value` that a documented record (a schema with `properties`) leaves out."""
    schema = resolve(doc, schema)
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        for key, item in value.items():
            if key not in props:
                found.append(f"{at}.{key}")
            else:
                found += undocumented(doc, props[key], item, f"{at}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += undocumented(doc, schema["items"], item, f"{at}[{i}]")
    return found


def check_answer(doc: dict[str, Any], path: str, r: Any) -> dict[str, Any]:
    """The answer's status is documented, its body validates and has no undocumented field."""
    op = doc["paths"][path]["post"]
    assert str(r.status_code) in op["responses"], (path, r.status_code, r.text)
    schema = op["responses"][str(r.status_code)]["content"]["application/json"]["schema"]
    data = r.json()
    _validator(doc, schema).validate(data)
    assert not undocumented(doc, schema, data), (path, undocumented(doc, schema, data))
    return dict(data)


def upload_file(http: Any, keys: Any, name: str = "photo.png") -> Any:
    data = b"\x89PNG\r\n\x1a\n" + b"\0" * 200
    return http.post(
        "/v1/File/Upload", files={"file": (name, data, "image/png")}, headers=signed_headers(keys)
    )


def test_the_catalog_answers_are_the_documented_ones(
    files_doc: dict[str, Any], files_app: tuple[Any, Services]
) -> None:
    http = files_app[0]
    full = check_answer(files_doc, "/v1/Tool/List", http.post("/v1/Tool/List", json={}))
    assert isinstance(full["total"], int) and full["total"] == 6
    assert {"parameters", "readme", "samples", "seodescription", "image"} <= set(full["tool"][0])
    summary = http.post("/v1/Tool/List", json={"summary": True, "sort": "time"})
    assert "parameters" not in check_answer(files_doc, "/v1/Tool/List", summary)["tool"][0]
    for sort in resolve(files_doc, {"$ref": "#/components/schemas/ToolListBody"})["properties"][
        "sort"
    ]["enum"]:
        data = check_answer(
            files_doc, "/v1/Tool/List", http.post("/v1/Tool/List", json={"sort": sort})
        )
        assert data["result"] is True, (sort, data)
    wrong = check_answer(files_doc, "/v1/Tool/List", http.post("/v1/Tool/List", json={"sort": "x"}))
    assert wrong["result"] is False
    detail = check_answer(
        files_doc,
        "/v1/Tool/Detail",
        http.post("/v1/Tool/Detail", json={"slugowner": "acme", "slugproject": "Photo-Toon"}),
    )
    [group] = detail["tool"][0]["parameters"]
    assert group["title"] == "Input"
    assert [(i["id"], i["type"], i["required"]) for i in group["items"]] == [
        ("inputImage", "fileinput", True),
        ("styleImage", "fileinput", False),
        ("prompt", "textarea", False),
    ]
    cartoon = http.post(
        "/v1/Tool/Detail", json={"slugowner": "futurist", "slugproject": "CartoonMix v1.0"}
    )
    items = check_answer(files_doc, "/v1/Tool/Detail", cartoon)["tool"][0]["parameters"][0]["items"]
    assert any("options" in i for i in items) and any("min" in i and "step" in i for i in items)
    explore = check_answer(files_doc, "/v1/Tool/Explore", http.post("/v1/Tool/Explore"))
    assert all(isinstance(g["total"], int) for g in explore["explore"])
    assert {g["id"] for g in explore["explore"]} >= {"image-to-image"}


def test_the_task_and_upload_answers_are_the_documented_ones(
    files_doc: dict[str, Any], files_app: tuple[Any, Services]
) -> None:
    http, services = files_app
    keys = new_project(services)
    client = SignedClient(http, keys)
    [item] = check_answer(files_doc, "/v1/File/Upload", upload_file(http, keys))["list"]
    # A file input in `{id}Url` (the official client's multipart way) or in `{id}`.
    run = check_answer(files_doc, PHOTO_RUN, client.post(PHOTO_RUN, {"inputImageUrl": item["url"]}))
    assert run["result"] is True, run
    run2 = check_answer(files_doc, PHOTO_RUN, client.post(PHOTO_RUN, {"inputImage": item["id"]}))
    assert run2["result"] is True, run2
    missing = check_answer(files_doc, PHOTO_RUN, client.post(PHOTO_RUN, {}))
    assert missing["errors"][0]["message"] == "Request parameter [inputImage] required"

    detail = check_answer(files_doc, "/v1/Task/Detail", client.post("/v1/Task/Detail", run))
    assert detail["tasklist"][0]["parameters"]["inputImage"] == item["url"]
    listed = check_answer(files_doc, "/v1/Task/List", client.post("/v1/Task/List", {"limit": "1"}))
    assert listed["total"] == "2" and len(listed["tasklist"]) == 1
    for body in ({"status": "task_queue", "sort": "createtime", "order": "asc"}, {"type": "x"}):
        check_answer(files_doc, "/v1/Task/List", client.post("/v1/Task/List", body))

    cancelled = check_answer(files_doc, "/v1/Task/Cancel", client.post("/v1/Task/Cancel", run))
    assert cancelled["tasklist"][0]["status"] == lc.CANCEL
    # A task a worker has taken: the hosted message, then the hint to use Task/Kill.
    with services.sessions() as session:
        session.execute(update(Task).where(Task.id == int(run2["taskid"])).values(status=lc.START))
        session.commit()
    running = check_answer(files_doc, "/v1/Task/Cancel", client.post("/v1/Task/Cancel", run2))
    assert [e["code"] for e in running["errors"]] == [1, 0]
    assert "Task/Kill" in running["errors"][1]["message"]
    cancel = files_doc["paths"]["/v1/Task/Cancel"]["post"]["description"]
    assert running["errors"][0]["message"] in cancel and "use Task/Kill" in cancel
    models = client.post("/v1/PrivateModel/List")
    assert check_answer(files_doc, "/v1/PrivateModel/List", models)["total"] == "0"


def test_file_inputs_are_documented_in_id_or_id_url(files_doc: dict[str, Any]) -> None:
    schema = resolve(files_doc, {"$ref": "#/components/schemas/Run.acme.photo-toon"})
    props = schema["properties"]
    assert {"inputImage", "inputImageUrl", "styleImage", "styleImageUrl"} <= set(props)
    assert "inputImage" not in schema.get("required", [])  # it may come as inputImageUrl
    validator = _validator(files_doc, schema)
    upload_id = "0123456789abcdef0123456789abcdef"
    for good in (
        {"inputImage": upload_id},
        {"inputImageUrl": "https://example.com/a.png"},
        {"inputImage": "", "inputImageUrl": "http://testserver/v1/File/k/photo.png"},
    ):
        validator.validate(good)
    for bad in ({}, {"inputImage": ""}, {"inputImage": "photo.png"}, {"styleImage": upload_id}):
        assert not validator.is_valid(bad), bad
    form = resolve(files_doc, {"$ref": "#/components/schemas/Run.acme.photo-toon.form"})
    assert "inputImageUrl" in form["properties"] and form["allOf"] == schema["allOf"]
    run = files_doc["paths"][PHOTO_RUN]["post"]["description"]
    assert "`inputImage`" in run and "{id}Url" in run


def test_the_replay_rule_is_documented_and_is_what_the_app_does(
    doc: dict[str, Any], app: tuple[Any, Services]
) -> None:
    nonce = doc["components"]["securitySchemes"]["nonce"]["description"]
    text = doc["info"]["description"]
    for described in (nonce, text):
        assert "accepted once" not in described.replace('not "accepted once"', "")
        assert "exact repeat" in described and "store no nonce" in described
        assert "nonce, method, path and body" in described
    assert "before any of the body is read" in text
    http, services = app
    keys = new_project(services)
    headers = {**signed_headers(keys), "Content-Type": "application/json"}
    # A read stores no nonce: the same signed request twice is fine.
    for _ in range(2):
        r = http.post("/v1/Task/List", content=b"{}", headers=headers)
        assert r.status_code == 200 and r.json()["result"] is True, r.text
    # A state-changing call refuses an exact repeat, and only that.
    run = "/v1/Run/futurist/cartoonmix-v1-0"
    first = http.post(run, content=b'{"steps": 1}', headers=headers)
    assert first.status_code == 200 and first.json()["result"] is True, first.text
    again = http.post(run, content=b'{"steps": 1}', headers=headers)
    assert again.status_code == 401 and "already made" in again.json()["errors"][0]["message"]
    assert (
        "already made with this nonce"
        in doc["paths"][run]["post"]["responses"]["401"]["description"]
    )
    other_body = http.post(run, content=b'{"steps": 2}', headers=headers)
    assert other_body.status_code == 200 and other_body.json()["result"] is True


def test_limits_and_outages_are_documented(doc: dict[str, Any]) -> None:
    for path, _, op in operations(doc):
        outage = op["responses"]["503"]
        assert "Retry-After" in outage["headers"], path
        assert outage["content"]["application/json"]["example"]["errors"][0]["message"] == (
            DB_UNAVAILABLE
        )
    common = doc["paths"]["/v1/Task/Detail"]["post"]["responses"]["413"]["description"]
    assert "8 MiB" in common and "streams" in common
    upload = doc["paths"]["/v1/File/Upload"]["post"]["responses"]["413"]["description"]
    assert "TOONFORGE_UPLOAD_MAX_MB" in upload
    assert "8 MiB" in doc["info"]["description"]

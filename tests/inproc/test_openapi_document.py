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
from fastapi import FastAPI
from openapi_spec_validator import validate

from toonforge.api.openapi import PUBLIC, SIGNED, app_routes, build_openapi
from toonforge.catalog import Manifest
from toonforge.services import Services
from toonforge.testing import SignedClient, in_process_app, new_project, settings_for_test

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
        assert schema.get("required", []) == [i.name for i in m.inputs if i.required]
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
    not_api = {"/openapi.json", "/docs", "/redoc", "/docs/assets/{name}"}
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

"""The API's envelope, authentication, validation and catalog, through real HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support import Client, Server, create_keys

CARTOON = "futurist/CartoonMix%20v1.0"
SMALL = {"prompt": "a cat", "samples": 1, "steps": 2, "width": 64, "height": 64}
CATALOG_DIR = Path(__file__).resolve().parents[1] / "src" / "toonforge" / "catalog" / "tools"


def envelope_error(r: httpx.Response) -> list[dict[str, Any]]:
    data = r.json()
    assert data["result"] is False
    return list(data["errors"])


# --- authentication -------------------------------------------------------------------------


def test_unknown_key_is_401(server: Server) -> None:
    r = httpx.post(server.url + "/v1/Task/Detail", headers={"x-api-key": "nope"}, json={})
    assert r.status_code == 401
    assert envelope_error(r) == [{"code": 0, "message": "Project authorization is not founded."}]


def test_missing_key_is_401(server: Server) -> None:
    r = httpx.post(server.url + "/v1/Run/" + CARTOON, json=SMALL)
    assert r.status_code == 401
    assert envelope_error(r)[0]["message"] == "Project authorization is not founded."


def test_signature_project_without_signature_headers(client: Client) -> None:
    r = client.http.post(
        "/v1/Task/Detail", headers={"x-api-key": client.keys["apikey"]}, json={"taskid": "1"}
    )
    assert r.status_code == 401
    assert envelope_error(r)[0]["message"] == (
        "Project requires signature authentication. x-signature and x-nonce headers are required."
    )


def test_wrong_signature(client: Client) -> None:
    headers = {"x-api-key": client.keys["apikey"], "x-nonce": "123", "x-signature": "ab" * 32}
    r = client.http.post("/v1/Task/Detail", headers=headers, json={"taskid": "1"})
    assert r.status_code == 401
    assert envelope_error(r)[0]["message"] == "Project authorization is not valid."


def test_ip_allow_list(server: Server) -> None:
    keys = create_keys(server.env, allow_ip="10.1.2.3")
    c = Client(server.url, keys)
    r = c.post("/v1/Task/Detail", {"taskid": "1"})
    assert r.status_code == 401
    assert envelope_error(r)[0]["message"] == "Requested ip 127.0.0.1 is not allowed."
    allowed = Client(server.url, create_keys(server.env, allow_ip="127.0.0.0/8"))
    assert allowed.post("/v1/Task/Detail", {"taskid": "1"}).status_code == 200


def test_key_only_project(server: Server) -> None:
    keys = create_keys(server.env, mode="key")
    r = httpx.post(
        server.url + "/v1/Task/Detail", headers={"x-api-key": keys["apikey"]}, json={"taskid": "1"}
    )
    assert r.status_code == 200
    assert envelope_error(r) == [{"code": 1, "message": "There is no task yet."}]


def test_revoked_key(server: Server) -> None:
    import subprocess
    import sys

    keys = create_keys(server.env)
    subprocess.run(
        [sys.executable, "-m", "toonforge", "keys", "revoke", keys["apikey"]],
        env=server.env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    r = Client(server.url, keys).post("/v1/Task/Detail", {"taskid": "1"})
    assert r.status_code == 401


def test_secrets_never_logged(server: Server, client: Client) -> None:
    client.post("/v1/Task/Detail", {"taskid": "1"})
    log = server.log()
    assert client.keys["apisecret"] not in log
    assert client.keys["apikey"] not in log


# --- envelope and routing -------------------------------------------------------------------


def test_unknown_endpoint(client: Client) -> None:
    r = client.post("/v1/No/Such")
    assert r.status_code == 404
    assert envelope_error(r) == [{"code": 0, "message": "Error parsing url."}]


def test_unknown_tool(client: Client) -> None:
    r = client.post("/v1/Run/nobody/nothing", SMALL)
    assert r.status_code == 200
    assert envelope_error(r) == [{"code": 1, "message": "slug-owner-project-not-exist"}]


@pytest.mark.parametrize("path", ["futurist/CartoonMix%20v1.0", "futurist/cartoonmix-v1-0"])
def test_slug_with_space_and_clean_slug_route(client: Client, path: str) -> None:
    data = client.run(path, SMALL)
    assert data["taskid"].isdigit() and len(data["socketaccesstoken"]) == 30
    assert data["errors"] == []


def test_tool_whose_engine_is_not_built(make_server: Any, tmp_path: Path) -> None:
    # Every catalog tool runs now: an operator's manifest marked not ready stands in.
    tools = tmp_path / "tools"
    tools.mkdir()
    manifest = yaml.safe_load((CATALOG_DIR / "cartoonmix-v1-0.yaml").read_text())
    manifest.update(
        id="901", owner="acme", slug="Later", engine_ready=False, engine_note="not built yet"
    )
    (tools / "later.yaml").write_text(yaml.safe_dump(manifest))
    srv = make_server(TOONFORGE_EXTRA_TOOLS_DIRS=json.dumps([str(tools)])).start()
    client = Client(srv.url, srv.keys)
    r = client.post("/v1/Run/acme/Later", {})
    errors = envelope_error(r)
    assert errors[0] == {"code": 1, "message": "tool-not-accessible"}
    assert "not built yet" in errors[1]["message"]
    detail = client.post("/v1/Tool/Detail", {"slugowner": "acme", "slugproject": "Later"}).json()
    assert detail["tool"][0]["engineready"] is False
    assert "not built yet" in detail["tool"][0]["enginenote"]


# --- bodies ---------------------------------------------------------------------------------


def _detail_params(client: Client, taskid: str) -> dict[str, Any]:
    return dict(client.detail(taskid)["parameters"])


def test_json_body(client: Client) -> None:
    r = client.http.post(
        "/v1/Run/" + CARTOON, json={**SMALL, "seed": "7"}, headers=client.headers()
    )
    assert r.json()["result"] is True
    assert _detail_params(client, r.json()["taskid"])["seed"] == 7


def test_multipart_body(client: Client) -> None:
    files = {k: (None, str(v)) for k, v in {**SMALL, "seed": "8", "scale": "3.5"}.items()}
    r = client.http.post("/v1/Run/" + CARTOON, files=files, headers=client.headers())
    assert r.json()["result"] is True, r.text
    params = _detail_params(client, r.json()["taskid"])
    assert params["seed"] == 8 and params["scale"] == 3.5 and params["steps"] == 2


def test_urlencoded_body(client: Client) -> None:
    r = client.http.post(
        "/v1/Run/" + CARTOON, data={**SMALL, "seed": "9"}, headers=client.headers()
    )
    assert r.json()["result"] is True, r.text
    assert _detail_params(client, r.json()["taskid"])["width"] == 64


def test_json_text_under_multipart_header(client: Client) -> None:
    # Exactly what the seed pages' curl examples send.
    headers = {**client.headers(), "Content-Type": "multipart/form-data"}
    r = client.http.post(
        "/v1/Run/" + CARTOON, content=json.dumps({**SMALL, "steps": "3"}), headers=headers
    )
    assert r.json()["result"] is True, r.text
    assert _detail_params(client, r.json()["taskid"])["steps"] == 3


def test_unparseable_body(client: Client) -> None:
    headers = {**client.headers(), "Content-Type": "application/json"}
    r = client.http.post("/v1/Run/" + CARTOON, content=b"{not json", headers=headers)
    assert r.status_code == 200
    assert envelope_error(r) == [{"code": 0, "message": "Request parameters are invalid."}]


# --- validation -----------------------------------------------------------------------------


def test_a_malformed_flux_json_prompt_is_refused_at_run(client: Client) -> None:
    r = client.post("/v1/Run/WizardWhitebeard/Toon-Renders", {"prompt": '{"T5": 3}'})
    errors = envelope_error(r)
    assert errors[0]["message"] == (
        "Request parameter [prompt] the JSON prompt's 'T5' value must be a string, got int"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", "abc", "Request parameter [steps] must be integer or float"),
        ("steps", 0, "Request parameter [steps] must be between 1 and 150"),
        ("steps", 2.5, "Request parameter [steps] must be an integer"),
        ("samples", 9, "Request parameter [samples] must be between 1 and 8"),
        ("scale", "x", "Request parameter [scale] must be integer or float"),
        ("scale", 31, "Request parameter [scale] must be between 0 and 30"),
        ("width", 100, "Request parameter [width] must be a multiple of 8"),
        ("height", 4096, "Request parameter [height] must be between 64 and 1024"),
        ("clipSkip", 0, "Request parameter [clipSkip] must be between 1 and 12"),
        ("seed", "abc", "Request parameter [seed] must be an integer (or empty for random)"),
        ("seed", "-5", "Request parameter [seed] must be between 0 and 9007199254740991"),
        ("scheduler", "Foo", "Request parameter [scheduler] must be one of:"),
        ("prompt", "x" * 4001, "Request parameter [prompt] must be at most 4000 characters"),
        ("prompt", {"a": 1}, "Request parameter [prompt] must be a string"),
        ("prompt", "a (cat:1.2.3)", "Request parameter [prompt] the weight '1.2.3'"),
        ("negativePrompt", "(ugly:1.2.3)", "Request parameter [negativePrompt] the weight"),
    ],
)
def test_invalid_input_names_the_parameter_and_queues_nothing(
    client: Client, field: str, value: Any, message: str
) -> None:
    before = client.run(CARTOON, SMALL)["taskid"]
    r = client.post("/v1/Run/" + CARTOON, {**SMALL, field: value})
    assert r.status_code == 200
    errors = envelope_error(r)
    assert errors[0]["code"] == 0
    assert errors[0]["message"].startswith(message), errors
    after = client.run(CARTOON, SMALL)["taskid"]
    assert int(after) == int(before) + 1, "a rejected request must not create a task"


def test_every_violation_is_reported(client: Client) -> None:
    r = client.post("/v1/Run/" + CARTOON, {"steps": 0, "width": 7, "samples": "many"})
    names = [e["message"].split("[")[1].split("]")[0] for e in envelope_error(r)]
    assert names == ["samples", "steps", "width"]


def test_defaults_and_string_numbers(client: Client) -> None:
    data = client.run(
        CARTOON, {"steps": "2", "scale": "4", "width": "64", "height": "64", "samples": "1"}
    )
    params = _detail_params(client, data["taskid"])
    assert params["steps"] == 2 and params["scale"] == 4.0 and params["clipSkip"] == 4
    assert params["scheduler"] == "EulerDiscreteScheduler"
    assert params["negativePrompt"] == "bad-hands-5 EasyNegativeV2 ng_deepnegative_v1_75t"
    assert params["prompt"].startswith("(masterpiece, top quality")


def test_empty_seed_picks_and_records_one(client: Client) -> None:
    data = client.run(CARTOON, {**SMALL, "seed": ""})
    seed = _detail_params(client, data["taskid"])["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**32


# --- tasks ----------------------------------------------------------------------------------


def test_detail_requires_an_id(client: Client) -> None:
    r = client.post("/v1/Task/Detail", {})
    assert envelope_error(r) == [{"code": 0, "message": "taskid or socketaccesstoken is required"}]


def test_detail_by_token_and_fields_are_strings(client: Client) -> None:
    data = client.run(CARTOON, SMALL)
    for key in ("tasktoken", "socketaccesstoken"):
        body = client.post("/v1/Task/Detail", {key: data["socketaccesstoken"]}).json()
        assert body["total"] == "1"
        task = body["tasklist"][0]
        assert task["id"] == data["taskid"]
    for field in ("id", "createtime", "elapsedseconds", "cps", "totalcost", "size", "canceltime"):
        assert isinstance(task[field], str), field
    assert task["modelslugowner"] == "futurist"
    assert task["modelslugproject"] == "CartoonMix v1.0"


def test_projects_never_see_each_others_tasks(server: Server, client: Client) -> None:
    mine = client.run(CARTOON, SMALL)
    other = Client(server.url, create_keys(server.env))
    for body in ({"taskid": mine["taskid"]}, {"tasktoken": mine["socketaccesstoken"]}):
        for path in ("/v1/Task/Detail", "/v1/Task/Cancel", "/v1/Task/Kill"):
            r = other.post(path, body)
            assert envelope_error(r) == [{"code": 1, "message": "There is no task yet."}], path
    r = other.post("/v1/Task/InputOutputDelete", {"tasktoken": mine["socketaccesstoken"]})
    assert envelope_error(r) == [{"code": 1, "message": "There is no task yet."}]


def test_concurrency_limit(make_server: Any) -> None:
    srv = make_server(workers=0)
    srv.start()
    keys = create_keys(srv.env, max_running="2")
    c = Client(srv.url, keys)
    c.run(CARTOON, SMALL)
    c.run(CARTOON, SMALL)
    r = c.post("/v1/Run/" + CARTOON, SMALL)
    assert envelope_error(r)[0]["code"] == 96
    # Cancelling one frees a place.
    first = c.post("/v1/Task/Cancel", {"taskid": "1"}).json()
    assert first["result"] is True
    assert c.post("/v1/Run/" + CARTOON, SMALL).json()["result"] is True


# --- catalog --------------------------------------------------------------------------------


def test_tool_list_and_filters(client: Client) -> None:
    all_tools = client.post("/v1/Tool/List", {}).json()
    assert all_tools["result"] is True and all_tools["total"] == 5
    slugs = {t["cleanslugproject"] for t in all_tools["tool"]}
    assert "cartoonmix-v1-0" in slugs
    video = client.post("/v1/Tool/List", {"categories": "text-to-video"}).json()
    assert [t["slugproject"] for t in video["tool"]] == ["animate-diff"]
    found = client.post("/v1/Tool/List", {"search": "pixar"}).json()
    assert [t["slugproject"] for t in found["tool"]] == ["CartoonMix v1.0"]
    page = client.post("/v1/Tool/List", {"start": 1, "limit": 2, "summary": "true"}).json()
    assert len(page["tool"]) == 2 and "parameters" not in page["tool"][0]
    by_owner = client.post("/v1/Tool/List", {"slugowner": "Adel_AI"}).json()
    assert [t["slugproject"] for t in by_owner["tool"]] == ["Comics-Factory-v1"]
    tagged = client.post("/v1/Tool/List", {"tags": "claymation"}).json()
    assert [t["slugproject"] for t in tagged["tool"]] == ["Toon-Renders"]


def test_tool_detail_carries_the_page(client: Client) -> None:
    tool = client.post(
        "/v1/Tool/Detail", {"slugowner": "futurist", "slugproject": "CartoonMix v1.0"}
    ).json()["tool"][0]
    [group] = tool["parameters"]
    names = [p["id"] for p in group["items"]]
    assert names == [
        "prompt",
        "negativePrompt",
        "samples",
        "steps",
        "scale",
        "seed",
        "clipSkip",
        "width",
        "height",
        "scheduler",
    ]
    scheduler = group["items"][-1]
    assert [o["value"] for o in scheduler["options"]].count("EulerDiscreteScheduler") == 2
    assert len(tool["inspire"]) == 5
    assert tool["offlinemode"] is True and "OFFLINE MODE" in tool["offlinenote"]
    assert tool["categories"] == [
        "model",
        "sd",
        "text-to-image",
        "checkpoint-file",
        "fp16",
        "persistent",
    ]

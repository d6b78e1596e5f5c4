"""Task/List as the official client's listTasks() sends it: one project's tasks only, newest
first, paged, filtered by model name."""

from __future__ import annotations

from typing import Any

from toonforge.testing import InProcess, SignedClient

CARTOON = "/v1/Run/futurist/CartoonMix%20v1.0"
VIDEO = "/v1/Run/wiro/animate-diff"
# What src/client.ts listTasks() sends.
CLIENT_BODY = {"type": "model", "sort": "id", "order": "DESC", "start": "0", "limit": "20"}


def runs(client: SignedClient, path: str, n: int) -> list[str]:
    return [client.ok(path, {"samples": 1})["taskid"] for _ in range(n)]


def listed(client: SignedClient, **body: Any) -> dict[str, Any]:
    return client.ok("/v1/Task/List", {**CLIENT_BODY, **body})


def ids(data: dict[str, Any]) -> list[str]:
    return [t["id"] for t in data["tasklist"]]


def test_newest_first_with_total_and_full_records(inproc: InProcess) -> None:
    made = runs(inproc.client, CARTOON, 2) + runs(inproc.client, VIDEO, 1)
    data = listed(inproc.client)
    assert data["total"] == "3" and ids(data) == made[::-1]
    task = data["tasklist"][0]
    assert task["modelslugowner"] == "wiro" and task["modelslugproject"] == "animate-diff"
    assert task["status"] == "task_queue" and task["socketaccesstoken"]
    detail = inproc.client.ok("/v1/Task/Detail", {"taskid": task["id"]})["tasklist"][0]
    assert {k: v for k, v in detail.items() if k != "callbacks"} == task


def test_paging_and_order(inproc: InProcess) -> None:
    made = runs(inproc.client, CARTOON, 5)
    assert ids(listed(inproc.client, start="1", limit="2")) == [made[3], made[2]]
    assert ids(listed(inproc.client, start=4, limit=10)) == [made[0]]
    assert listed(inproc.client, start="5")["tasklist"] == []
    assert listed(inproc.client, start="5")["total"] == "5"
    assert ids(listed(inproc.client, order="ASC", limit="2")) == made[:2]
    assert ids(listed(inproc.client, sort="createtime", order="asc")) == made


def test_model_name_filter_takes_page_clean_and_partial_names(inproc: InProcess) -> None:
    cartoon = runs(inproc.client, CARTOON, 2)
    video = runs(inproc.client, VIDEO, 1)
    for name in (
        "futurist/CartoonMix v1.0",
        "futurist/cartoonmix-v1-0",
        "cartoonmix",
        "CartoonMix v1",
    ):
        data = listed(inproc.client, modelName=name)
        assert ids(data) == cartoon[::-1] and data["total"] == "2", name
    assert ids(listed(inproc.client, modelName="wiro/animate-diff")) == video
    assert listed(inproc.client, modelName="flux-9000")["total"] == "0"
    queued = listed(inproc.client, status="task_queue")
    assert queued["total"] == "3"


def test_another_projects_tasks_are_never_listed(inproc: InProcess) -> None:
    mine = runs(inproc.client, CARTOON, 2)
    other = inproc.project()
    theirs = runs(other, CARTOON, 1)
    assert ids(listed(inproc.client)) == mine[::-1]
    assert ids(listed(other)) == theirs
    assert listed(other, modelName="cartoonmix")["total"] == "1"
    keyonly = inproc.project(mode="key")
    assert listed(keyonly) == {"result": True, "errors": [], "total": "0", "tasklist": []}


def test_invalid_values_name_the_parameter(inproc: InProcess) -> None:
    cases = {
        "sort": (
            "cost",
            "Request parameter [sort] must be one of: id, createtime, starttime, endtime",
        ),
        "order": ("UP", "Request parameter [order] must be one of: ASC, DESC"),
        "limit": ("0", "Request parameter [limit] must be between 1 and 100"),
        "start": ("-1", "Request parameter [start] must be between 0 and 1000000000"),
        "type": ("agent", "Request parameter [type] must be one of: model"),
    }
    for name, (value, message) in cases.items():
        r = inproc.client.post("/v1/Task/List", {name: value})
        assert r.status_code == 200 and r.json() == {
            "result": False,
            "errors": [{"code": 0, "message": message}],
        }, name
    assert inproc.client.post("/v1/Task/List", {"limit": "many"}).json()["errors"][0][
        "message"
    ] == ("Request parameter [limit] must be integer or float")


def test_needs_authentication(inproc: InProcess) -> None:
    r = inproc.http.post("/v1/Task/List", json=CLIENT_BODY)
    assert r.status_code == 401
    assert r.json()["errors"] == [{"code": 0, "message": "Project authorization is not founded."}]

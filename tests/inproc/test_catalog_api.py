"""Tool/List, Tool/Detail and Tool/Explore as the official Wiro client and MCP server call
them: its sort values, the grouped parameter shape, the record fields it reads."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import update

from toonforge.catalog.search import SORTS
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Task
from toonforge.testing import InProcess

TOOLS = {
    "1": "futurist/CartoonMix v1.0",
    "2": "retroAIx/Retro-Cartoons",
    "3": "WizardWhitebeard/Toon-Renders",
    "4": "Adel_AI/Comics-Factory-v1",
    "5": "wiro/animate-diff",
}
# What the client's searchModels() sends (src/client.ts), with the MCP server's sort values.
CLIENT_SEARCH = {
    "start": "0",
    "limit": "20",
    "search": "",
    "categories": [],
    "sort": "relevance",
    "hideworkflows": True,
    "summary": True,
}


def tool_list(inproc: InProcess, **body: Any) -> dict[str, Any]:
    return inproc.client.ok("/v1/Tool/List", body)


def ids(data: dict[str, Any]) -> list[str]:
    return [t["id"] for t in data["tool"]]


@pytest.mark.parametrize(
    "sort", ["relevance", "time", "ratedusercount", "commentcount", "averagepoint"]
)
def test_every_sort_the_client_sends_is_accepted(inproc: InProcess, sort: str) -> None:
    data = tool_list(inproc, **{**CLIENT_SEARCH, "sort": sort})
    assert data["total"] == 5 and isinstance(data["total"], int)
    assert sorted(ids(data)) == sorted(TOOLS)
    assert all("parameters" not in t for t in data["tool"])  # summary


def test_an_unknown_sort_names_the_parameter_and_the_values(inproc: InProcess) -> None:
    r = inproc.client.post("/v1/Tool/List", {"sort": "popularity"})
    assert r.status_code == 200
    assert r.json() == {
        "result": False,
        "errors": [
            {"code": 0, "message": f"Request parameter [sort] must be one of: {', '.join(SORTS)}"}
        ],
    }
    bad = inproc.client.post("/v1/Tool/List", {"order": "UP"}).json()
    assert bad["errors"][0]["message"] == "Request parameter [order] must be one of: ASC, DESC"


def test_relevance_puts_the_best_match_first(inproc: InProcess) -> None:
    # "toon renders": Toon-Renders matches both words in its name (and the whole text in its
    # description); CartoonMix and Retro-Cartoons match "toon" only; the others nothing.
    best = tool_list(inproc, search="toon renders", sort="relevance")
    assert ids(best) == ["3", "1", "2"] and best["total"] == 3
    worst = tool_list(inproc, search="toon renders", sort="relevance", order="ASC")
    assert ids(worst) == ["1", "2", "3"]  # ties keep the id order in both directions
    by_id = tool_list(inproc, search="toon renders", sort="id")
    assert ids(by_id) == ["1", "2", "3"]


def test_relevance_reads_a_sentence_as_the_mcp_recommend_tool_sends_it(inproc: InProcess) -> None:
    data = tool_list(inproc, search="make a video of a dancing robot", sort="relevance", limit="10")
    assert ids(data) == ["5"]  # "video": animate-diff's text-to-video category
    assert tool_list(inproc, search="pixar")["tool"][0]["slugproject"] == "CartoonMix v1.0"
    assert tool_list(inproc, search="zeppelin", sort="relevance") == {
        "result": True,
        "errors": [],
        "total": 0,
        "tool": [],
    }


def test_relevance_without_search_text_keeps_the_id_order(inproc: InProcess) -> None:
    assert ids(tool_list(inproc, **CLIENT_SEARCH)) == ["1", "2", "3", "4", "5"]


def test_time_is_newest_first(inproc: InProcess) -> None:
    data = tool_list(inproc, sort="time")
    # Retro-Cartoons became runnable last, CartoonMix first; the two FLUX tools together.
    assert ids(data) == ["2", "5", "3", "4", "1"]
    times = [int(t["addedtime"]) for t in data["tool"]]
    assert times == sorted(times, reverse=True)
    assert ids(tool_list(inproc, sort="time", order="ASC")) == ["1", "3", "4", "5", "2"]


@pytest.mark.parametrize("sort", ["ratedusercount", "commentcount", "averagepoint"])
def test_rating_sorts_fall_back_to_the_id_order(inproc: InProcess, sort: str) -> None:
    data = tool_list(inproc, sort=sort)
    assert ids(data) == ["1", "2", "3", "4", "5"]
    assert {(t["ratedusercount"], t["commentcount"], t["averagepoint"]) for t in data["tool"]} == {
        ("0", "0", "0.00")
    }


def test_filters_and_paging_still_work(inproc: InProcess) -> None:
    assert ids(tool_list(inproc, categories=["text-to-video"])) == ["5"]
    assert ids(tool_list(inproc, slugowner="Adel_AI")) == ["4"]
    assert ids(tool_list(inproc, tags="claymation")) == ["3"]
    page = tool_list(inproc, start="1", limit="2", sort="id", order="DESC")
    assert ids(page) == ["4", "3"] and page["total"] == 5


def test_records_carry_the_fields_the_client_reads(inproc: InProcess) -> None:
    [tool] = tool_list(inproc, slugowner="futurist")["tool"]
    assert (
        tool["image"]
        == tool["cover"]
        == "https://cdn.wiro.ai/uploads/models/futurist-cartoonmix-cover.png"
    )
    assert tool["seodescription"] == tool["description"]
    assert tool["dynamicprice"] == "" and tool["cps"] == "0.000585000000"
    # Never run here: no estimate rather than a made-up one.
    assert tool["approximatelycost"] == "" and tool["computingtime"] == ""
    detail = inproc.client.ok(
        "/v1/Tool/Detail", {"slugowner": "futurist", "slugproject": "cartoonmix-v1-0"}
    )
    [full] = detail["tool"]
    assert full["readme"].startswith("<p>CartoonMix is an AI model") and full["samples"] == []
    assert "image" in full and "seodescription" in full and "inspire" in full


def _finish(inproc: InProcess, taskid: str, seconds: float) -> None:
    """Mark a queued task as a successful run of `seconds` (what a worker records)."""
    t = time.time()
    with inproc.services.sessions() as session:
        session.execute(
            update(Task)
            .where(Task.id == int(taskid))
            .values(status=lc.POSTPROCESS_END, pexit="0", starttime=t - seconds, endtime=t)
        )
        session.commit()


def test_approximate_cost_is_cps_times_the_median_recent_run(inproc: InProcess) -> None:
    for seconds in (10.0, 30.0, 20.0):
        run = inproc.client.ok("/v1/Run/futurist/CartoonMix%20v1.0", {"samples": 1})
        _finish(inproc, run["taskid"], seconds)
    inproc.client.ok("/v1/Run/futurist/CartoonMix%20v1.0", {"samples": 1})  # queued: not counted
    [tool] = tool_list(inproc, slugowner="futurist", summary=True)["tool"]
    assert tool["approximatelycost"] == "0.011700000000"  # 0.000585 × 20 s
    assert tool["computingtime"] == "20 seconds"
    [other] = tool_list(inproc, slugowner="wiro")["tool"]
    assert other["approximatelycost"] == ""


@pytest.mark.parametrize("taskid", sorted(TOOLS))
def test_detail_parameters_are_grouped_with_every_page_field(
    inproc: InProcess, taskid: str
) -> None:
    owner, slug = TOOLS[taskid].split("/")
    [tool] = inproc.client.ok("/v1/Tool/Detail", {"slugowner": owner, "slugproject": slug})["tool"]
    manifest = inproc.services.catalog.find(owner, slug)
    assert manifest is not None
    [group] = tool["parameters"]
    assert group["title"] == "Input"
    assert [item["id"] for item in group["items"]] == [i.name for i in manifest.inputs]
    for item, spec in zip(group["items"], manifest.inputs, strict=True):
        assert "name" not in item
        assert (item["label"], item["help"], item["type"]) == (spec.label, spec.help, spec.type)
        assert item["default"] == spec.default and item["required"] is spec.required
        if spec.options is not None:
            assert [o["value"] for o in item["options"]] == [o.value for o in spec.options]
        if spec.min is not None:
            assert (item["min"], item["max"]) == (spec.min, spec.max)
            assert "between" in item["note"]
        if spec.integer:
            assert item["integer"] is True and item["step"] == (spec.multiple_of or 1)


def test_detail_keeps_bounds_and_option_details(inproc: InProcess) -> None:
    [tool] = inproc.client.ok(
        "/v1/Tool/Detail", {"slugowner": "wiro", "slugproject": "animate-diff"}
    )["tool"]
    items = {i["id"]: i for i in tool["parameters"][0]["items"]}
    assert items["frameNumber"]["note"] == "Integer between 1 and 32."
    bases = {o["value"]: o for o in items["selectedModel"]["options"]}
    assert bases["969"]["triggerwords"] == ["aodai", "3dcharacter", "3dcutecharacter", "chibi"]
    [cartoon] = inproc.client.ok(
        "/v1/Tool/Detail", {"slugowner": "futurist", "slugproject": "CartoonMix v1.0"}
    )["tool"]
    width = next(i for i in cartoon["parameters"][0]["items"] if i["id"] == "width")
    assert width["note"] == "Integer between 64 and 1024. A multiple of 8." and width["step"] == 8
    seed = next(i for i in cartoon["parameters"][0]["items"] if i["id"] == "seed")
    assert seed["seed"] is True and seed["default"] == "123456"


@pytest.mark.parametrize("taskid", sorted(TOOLS))
def test_the_pages_own_examples_still_run(inproc: InProcess, taskid: str) -> None:
    """Run validation reads the manifests, not the grouped shape: each page's first
    "Parameter Inspires" example (or its defaults) is queued as before."""
    manifest = inproc.services.catalog.by_key(TOOLS[taskid])
    assert manifest is not None
    example = manifest.inspire[0] if manifest.inspire else {}
    owner, slug = TOOLS[taskid].split("/")
    run = inproc.client.ok(f"/v1/Run/{owner}/{slug}", example)
    task = inproc.client.ok("/v1/Task/Detail", {"taskid": run["taskid"]})["tasklist"][0]
    assert task["status"] == "task_queue"


def test_explore_groups_the_tools_by_what_they_do(inproc: InProcess) -> None:
    data = inproc.client.ok("/v1/Tool/Explore", {})
    groups = {g["id"]: g for g in data["explore"]}
    assert list(groups) == ["text-to-image", "text-to-video"]
    image = groups["text-to-image"]
    assert image["title"] == "Text to Image" and image["total"] == 4
    assert [t["id"] for t in image["tools"]] == ["1", "2", "3", "4"]
    assert [t["cleanslugproject"] for t in groups["text-to-video"]["tools"]] == ["animate-diff"]
    for tool in image["tools"]:
        assert {"cleanslugowner", "image", "description", "categories", "averagepoint"} <= set(tool)
        assert "parameters" not in tool
    # Public like the rest of the catalog: no key needed.
    anonymous = inproc.http.post("/v1/Tool/Explore", json={})
    assert anonymous.status_code == 200 and anonymous.json()["result"] is True

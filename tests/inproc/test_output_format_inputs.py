"""outputFormat / outputQuality at Run: checked when sent, named when wrong, never filled in
(a request as the pages send it is recorded as before), absent from video tools."""

from __future__ import annotations

from typing import Any

import pytest

from toonforge.testing import InProcess

CARTOON = "/v1/Run/futurist/CartoonMix%20v1.0"


def _params(inproc: InProcess, taskid: str) -> dict[str, Any]:
    task = inproc.client.ok("/v1/Task/Detail", {"taskid": taskid})["tasklist"][0]
    return dict(task["parameters"])


def test_sent_values_are_kept_and_absent_ones_are_not_added(inproc: InProcess) -> None:
    plain = inproc.client.ok(CARTOON, {"samples": 1})["taskid"]
    assert "outputFormat" not in _params(inproc, plain)
    assert "outputQuality" not in _params(inproc, plain)
    webp = inproc.client.ok(CARTOON, {"outputFormat": "WebP", "outputQuality": "75"})["taskid"]
    params = _params(inproc, webp)
    assert (params["outputFormat"], params["outputQuality"]) == ("webp", 75)
    flux = inproc.client.ok("/v1/Run/WizardWhitebeard/Toon-Renders", {"outputFormat": "jpeg"})
    assert _params(inproc, flux["taskid"])["outputFormat"] == "jpeg"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("outputFormat", "gif", 'Request parameter [outputFormat] must be one of: "png", "webp"'),
        ("outputQuality", 0, "Request parameter [outputQuality] must be between 1 and 100"),
        ("outputQuality", "x", "Request parameter [outputQuality] must be integer or float"),
        ("outputQuality", 50.5, "Request parameter [outputQuality] must be an integer"),
    ],
)
def test_a_bad_value_names_the_parameter(
    inproc: InProcess, field: str, value: Any, message: str
) -> None:
    r = inproc.client.post(CARTOON, {field: value})
    data = r.json()
    assert r.status_code == 200 and data["result"] is False
    assert data["errors"][0]["message"].startswith(message), data


def test_video_tools_do_not_take_them(inproc: InProcess) -> None:
    run = inproc.client.ok("/v1/Run/wiro/animate-diff", {"outputFormat": "gif"})
    # Not an input of this tool: kept as sent, unused (as any undeclared field).
    assert _params(inproc, run["taskid"])["outputFormat"] == "gif"


def test_the_run_bodies_document_them(inproc: InProcess) -> None:
    doc = inproc.http.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    cartoon = next(s for k, s in schemas.items() if k.startswith("Run.futurist.cartoonmix"))
    # "" is accepted too: it takes the default (png).
    assert cartoon["properties"]["outputFormat"]["enum"] == ["png", "webp", "jpeg", ""]
    video = next(s for k, s in schemas.items() if k.startswith("Run.wiro.animate-diff"))
    assert "outputFormat" not in video["properties"]

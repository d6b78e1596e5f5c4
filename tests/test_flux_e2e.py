"""The two FLUX.1-dev + LoRA tools end to end: HTTP → worker → real tiny FluxPipeline → PNGs.

One SQLite server for the module (the FLUX engine does not touch the database layer, which the
other suites cover on both backends).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from support import Client, Server, create_keys, images, run_ok

TOON = "WizardWhitebeard/Toon-Renders"
COMICS = "Adel_AI/Comics-Factory-v1"
CALLBACK_TEXT = (
    "You can provide a callback URL; Wiro will send a POST request to it when the task is "
    "completed."
)
# The pages' own curl bodies, verbatim (1024x1024: a few seconds on the tiny stand-in).
TOON_PAGE_REQUEST = {
    "prompt": 'w1z_r3nd3r, a potato with face and hands is holding a sign with text:"STOP the '
    'SLAUGHTER!" next to a package of french fries, protesting on a street',
    "samples": 1,
    "steps": 28,
    "scale": "1",
    "seed": "26355552",
    "width": 1024,
    "height": 1024,
    "callbackUrl": CALLBACK_TEXT,
}
COMICS_PAGE_REQUEST = {
    "prompt": "ComicsFact1 style. A moody, atmospheric photo-realistic shoot from the side about "
    "a silhouette of a man walking towards a vintage car in a dimly lit industrial setting "
    "during a rainy night, with a strong focus on the man and his vehicle. on the left side of "
    "the image, a man in a long coat and hat is walking towards the car, carrying a briefcase. "
    "he appears to be in his mid-twenties, with his full body visible, and his posture suggests "
    "a sense of urgency. he is wearing a hat and carrying a suitcase, and the car is parked in "
    "front of him, casting a shadow on the wet floor. in the background, a dilapidated building "
    "with wooden beams and beams is partially obscured by fog, creating a mysterious "
    "atmosphere. the scene is set against a dark, foggy backdrop with a hint of green light "
    "emanating from the windows, adding to the moody atmosphere.solo, hat, walking, full body, "
    "indoors, suit, from side, bag, car, silhouette, window, suitcase, rain, silhouette of "
    "person, rainy",
    "samples": 1,
    "steps": 20,
    "scale": "3.5",
    "seed": "93080474",
    "width": 1024,
    "height": 1024,
    "callbackUrl": CALLBACK_TEXT,
}
SMALL = {
    "prompt": "w1z_r3nd3r, a lemon with a face",
    "samples": 1,
    "steps": 3,
    "scale": "3.5",
    "seed": "559664054",
    "width": 64,
    "height": 64,
}


@pytest.fixture(scope="module")
def flux_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("flux-server"))
    srv.keys = create_keys(srv.env)  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(flux_server: Server) -> Client:
    return Client(flux_server.url, flux_server.keys)  # type: ignore[attr-defined]


def debug(task: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(task["debugoutput"]))


@pytest.mark.parametrize(
    ("tool", "body", "trigger"),
    [(TOON, TOON_PAGE_REQUEST, "w1z_r3nd3r"), (COMICS, COMICS_PAGE_REQUEST, "ComicsFact1")],
)
def test_page_request_runs_to_success(
    client: Client, tool: str, body: dict[str, Any], trigger: str
) -> None:
    task = run_ok(client, tool, body)
    assert [o["name"] for o in task["outputs"]] == ["0.png"]
    assert images(task)[0].shape == (1024, 1024, 3)
    info = debug(task)
    assert info["family"] == "flux" and info["tiny"] is True
    assert info["steps"] == body["steps"] and info["scale"] == float(body["scale"])
    assert info["seed"] == int(body["seed"])
    meta = Image.open(io.BytesIO(httpx.get(task["outputs"][0]["url"]).content)).info
    assert meta["toonforge-tiny"] == "true" and meta["seed"] == body["seed"]
    owner, slug = tool.split("/")
    detail = client.post("/v1/Tool/Detail", {"slugowner": owner, "slugproject": slug}).json()
    record = detail["tool"][0]
    assert record["engineready"] is True and record["enginenote"] == ""
    assert record["triggerwords"] == [trigger]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", "w1z_r3nd3r, a broccoli with a face"),
        ("steps", 5),
        ("scale", "1"),
        ("seed", "26355552"),
    ],
)
def test_every_input_changes_the_image(client: Client, field: str, value: Any) -> None:
    base = images(run_ok(client, TOON, SMALL))[0]
    changed = images(run_ok(client, TOON, {**SMALL, field: value}))[0]
    assert np.abs(base - changed).max() > 2, field


def test_samples_width_and_height(client: Client) -> None:
    task = run_ok(client, TOON, {**SMALL, "samples": 2, "width": 128, "height": 64})
    imgs = images(task)
    assert len(imgs) == 2 and all(im.shape == (64, 128, 3) for im in imgs)
    assert np.abs(imgs[0] - imgs[1]).max() > 2, "sample i uses seed + i"
    assert debug(task)["seeds"] == [559664054, 559664055]


def test_size_not_a_multiple_of_16_is_refused_naming_it(client: Client) -> None:
    r = client.post(f"/v1/Run/{TOON}", {**SMALL, "width": 72})
    data = r.json()
    assert r.status_code == 200 and data["result"] is False
    assert "width" in json.dumps(data["errors"])


def test_json_prompt_example_with_negative_prompt(client: Client) -> None:
    # One of the page's "Parameter Inspires" examples, verbatim but for steps and size.
    body = {
        "steps": 3,
        "scale": 1,
        "prompt": '{ "T5": "a surreal, ethereal scene with threads of light, in the style of '
        'w1z_r3nd3r", "CLIP-L": "surreal, ethereal, threads of light, w1z_r3nd3r" }',
        "negativePrompt": "unknown",
        "seed": 22463773,
        "width": 64,
        "height": 64,
    }
    task = run_ok(client, TOON, body)
    assert task["parameters"]["negativePrompt"] == "unknown", "undeclared inputs are kept"
    info = debug(task)
    assert info["encoders"] == {
        "T5": "a surreal, ethereal scene with threads of light, in the style of w1z_r3nd3r",
        "CLIP-L": "surreal, ethereal, threads of light, w1z_r3nd3r",
        "source": "JSON prompt",
    }
    assert info["true_cfg"] is False
    assert any(n.startswith("negativePrompt ignored: ") for n in info["notes"])
    plain = run_ok(client, TOON, {**body, "prompt": "surreal, ethereal"})
    assert np.abs(images(task)[0] - images(plain)[0]).max() > 2


def test_bad_json_prompt_is_refused_at_run(client: Client) -> None:
    r = client.post(f"/v1/Run/{TOON}", {**SMALL, "prompt": '{"T5": 5, "CLIP-L": "x"}'}).json()
    assert r["result"] is False
    assert r["errors"][0]["message"] == (
        "Request parameter [prompt] the JSON prompt's 'T5' value must be a string, got int"
    )


def test_switching_tools_keeps_one_base(client: Client, flux_server: Server) -> None:
    a = run_ok(client, TOON, SMALL)
    b = run_ok(client, COMICS, SMALL)
    a2 = run_ok(client, TOON, SMALL)
    info_b, info_a2 = debug(b), debug(a2)
    base_b = [p for p in info_b["parts"] if p["part"].startswith("flux-base:")]
    assert len(base_b) == 1 and base_b[0]["reused"] is True, info_b["parts"]
    assert info_b["active_adapters"] == [{"name": "comics-factory-v1", "weight": 1.0}]
    assert info_a2["lora"]["already_resident"] == ["toon-renders"]
    assert info_a2["reused"] is True
    assert sorted(info_a2["resident_adapters"]) == ["comics-factory-v1", "toon-renders"]
    assert np.abs(images(a)[0] - images(b)[0]).max() > 2, "each tool's LoRA shows"
    assert np.array_equal(images(a)[0], images(a2)[0])
    # What the worker publishes as loaded: one FLUX base, used by both tools.
    states = [
        json.loads(p.read_text())
        for p in (flux_server.data_dir / "state" / "loaded").glob("*.json")
    ]
    bases = [p for s in states for p in s["parts"] if p["part"].startswith("flux-base:")]
    assert len(bases) == 1
    assert bases[0]["tools"] == [COMICS, TOON]


def test_real_mode_without_weights_says_what_is_missing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    srv = Server(
        tmp_path / "real",
        TOONFORGE_TINY="false",
        TOONFORGE_MODELS_DIR=str(models),
        HF_HOME=str(tmp_path / "hf-home"),
    )
    srv.keys = create_keys(srv.env)  # type: ignore[attr-defined]
    srv.start()
    try:
        client = Client(srv.url, srv.keys)  # type: ignore[attr-defined]
        r = client.post(f"/v1/Run/{COMICS}", SMALL)
        assert r.status_code == 200, r.text
        task = client.wait(r.json()["taskid"])
        why = f"{task}\n--- server log ---\n{srv.log()[-4000:]}"
        assert task["status"] == "task_postprocess_end" and task["pexit"] != "0", why
        err = task["debugerror"]
        assert "black-forest-labs/FLUX.1-dev" in err, why
        assert "black-forest-labs/FLUX.1-dev" in err
        assert "'Comics-Factory-v1.safetensors'" in err
        assert "No public download is known" in err
        # Where it goes, named without this server's folders (the log has the full path).
        assert "<models>/Comics-Factory-v1.safetensors" in err
        assert str(models) not in err
        assert task["outputs"] == []
    finally:
        srv.stop()

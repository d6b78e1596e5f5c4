"""The playground at / in a real browser (Chromium, headless) against a real `toonforge serve
--tiny`: the catalog, a key entered in Settings (signature mode: signed in the page), a
CartoonMix run with its images, Kill of a running task, Cancel of a queued one, the API's own
message beside the field it names, the recent tasks, a file upload with a checkbox and a
range, an AnimateDiff run with its video. The runs are ordered so that each pipeline loads
once (the SD 1.5 ones first, AnimateDiff last)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect

from support import Client, Server, workers_paused
from toonforge.api.auth import signature_for

pytestmark = pytest.mark.timeout(300)

RUN_TIMEOUT_MS = 90_000


def enter_key(page: Any, keys: dict[str, Any]) -> None:
    if not page.locator("#settings").is_visible():
        page.get_by_role("button", name="Settings").click()
    page.get_by_label("API key").fill(keys["apikey"])
    page.get_by_label("API secret").fill(keys.get("apisecret", ""))
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#settings-state")).to_have_text("Saved.")


def choose_tool(page: Any, slug: str) -> None:
    page.locator(f'.tool-card[data-slug="{slug}"]').click()
    expect(page.locator("#tool-title")).to_contain_text(slug)


def fill(page: Any, values: dict[str, Any]) -> None:
    for name, value in values.items():
        page.get_by_label(name, exact=True).fill(str(value))


def test_the_catalog_and_the_tiny_weights_are_shown(page: Any) -> None:
    cards = page.locator(".tool-card")
    expect(cards).to_have_count(6)  # the five of the catalog and the tests' acme/Form-Check
    banner = page.locator("#offline-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("OFFLINE MODE")
    expect(banner).to_contain_text("tiny stand-in weights")
    # Covers on another host cannot load here: each becomes its placeholder.
    expect(page.locator(".tool-card .cover.placeholder")).to_have_count(6)
    page.get_by_label("Search tools").fill("video")
    expect(cards).to_have_count(1)
    expect(cards.first).to_contain_text("wiro/animate-diff")
    page.get_by_label("Search tools").fill("")
    expect(cards).to_have_count(6)


def test_the_form_has_every_input_with_defaults_bounds_and_examples(page: Any) -> None:
    choose_tool(page, "CartoonMix v1.0")
    expect(page.get_by_label("steps", exact=True)).to_have_value("20")
    expect(page.get_by_label("steps", exact=True)).to_have_attribute("max", "150")
    expect(page.locator("#note-steps")).to_contain_text("Integer between 1 and 150.")
    expect(page.get_by_label("scheduler", exact=True)).to_have_value("EulerDiscreteScheduler")
    expect(page.locator("#note-width")).to_contain_text("A multiple of 8.")
    # An example fills the form in one click.
    page.get_by_role("button", name=re.compile(r"^Example 2:")).click()
    expect(page.get_by_label("prompt", exact=True)).to_have_value(
        re.compile(r"^\(\(\(best quality\)\)\), pretty 1girl, brown hair, red dress")
    )
    # AnimateDiff: a select whose default is not among its options is kept, as the page has it.
    choose_tool(page, "animate-diff")
    expect(page.get_by_label("selectedModel", exact=True)).to_have_value("60")
    expect(page.get_by_label("loraType", exact=True)).to_have_value("FILE:169584")
    expect(page.get_by_label("frameNumber", exact=True)).to_have_value("18")


def test_the_page_signs_as_the_server_checks(page: Any) -> None:
    cases = [("key", "secret", "1700000000000"), ("k" * 100, "sécret ✓", "42"), ("ké", "", "7")]
    for key, secret, nonce in cases:
        expected = signature_for(key, secret, nonce)
        for fn in ("hmacHex", "hmacHexScript"):  # WebCrypto, and the script for plain http
            got = page.evaluate(
                f"([k, m]) => window.toonforgeSign.{fn}(k, m)", [key, secret + nonce]
            )
            assert got == expected, (fn, key, secret, nonce)


def test_without_a_key_run_asks_for_one(page: Any) -> None:
    choose_tool(page, "CartoonMix v1.0")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#run-error")).to_contain_text("API key")
    expect(page.get_by_label("API key")).to_be_focused()


def test_the_apis_message_is_shown_beside_the_field(page: Any, server: Server) -> None:
    enter_key(page, server.keys)  # type: ignore[attr-defined]
    choose_tool(page, "CartoonMix v1.0")
    # A prompt the browser cannot judge: the server's parser refuses it, naming the field.
    fill(page, {"prompt": "a cat (smiling:1.2.3)", "steps": 3, "width": 64, "height": 64})
    page.get_by_role("button", name="Run", exact=True).click()
    prompt_error = page.locator("#err-prompt")
    expect(prompt_error).to_be_visible()
    expect(prompt_error).to_contain_text("Request parameter [prompt]")
    expect(page.get_by_label("prompt", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#task-view")).to_be_hidden()
    # A bound the browser checks before sending...
    fill(page, {"prompt": "a cat", "steps": 999})
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#err-steps")).to_have_text(
        "Request parameter [steps] must be between 1 and 150"
    )
    expect(page.locator("#err-prompt")).to_be_hidden()
    # ...and, with the browser's checks off, the server's own message in the same place.
    page.get_by_label("Skip the browser's input checks", exact=False).check()
    with page.expect_response(re.compile(r"/v1/Run/")) as answer:
        page.get_by_role("button", name="Run", exact=True).click()
    body = answer.value.json()
    assert body["result"] is False
    server_message = body["errors"][0]["message"]
    assert "[steps]" in server_message
    expect(page.locator("#err-steps")).to_have_text(server_message)
    expect(page.locator("#task-view")).to_be_hidden()


def test_cartoonmix_runs_and_shows_its_images(page: Any, server: Server) -> None:
    enter_key(page, server.keys)  # type: ignore[attr-defined]
    choose_tool(page, "CartoonMix v1.0")
    fill(page, {"prompt": "a cartoon cat", "samples": 2, "steps": 3, "width": 64, "height": 64})
    page.get_by_role("button", name="Run", exact=True).click()
    status = page.locator("#task-status")
    expect(status).to_have_text("Done", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#task-progress")).to_have_js_property("value", 100)
    images = page.locator("#task-outputs img")
    expect(images).to_have_count(2)
    for i in range(2):
        image = images.nth(i)
        expect(image).to_have_js_property("complete", True)
        expect(image).to_have_js_property("naturalWidth", 64)
    links = page.get_by_role("link", name=re.compile(r"^Download \d\.png$"))
    expect(links).to_have_count(2)
    href = links.first.get_attribute("href")
    assert httpx.get(href, timeout=30).headers["content-type"] == "image/png"
    # The task is among the project's recent tasks; opening it shows its outputs again.
    task_id = page.locator("#task-title").inner_text().split()[1]
    recent = page.locator(f'.recent-item[data-taskid="{task_id}"]')
    expect(recent).to_contain_text("Done")
    page.reload()
    recent.click()
    expect(page.locator("#task-status")).to_have_text("Done")
    expect(page.locator("#task-outputs img")).to_have_count(2)
    # Its inputs go back into the form in one click (the page was reloaded: no form yet).
    page.get_by_role("button", name="Use these inputs").click()
    expect(page.get_by_label("prompt", exact=True)).to_have_value("a cartoon cat")
    expect(page.get_by_label("samples", exact=True)).to_have_value("2")


def test_kill_ends_a_running_task_cancelled(page: Any, server: Server) -> None:
    enter_key(page, server.keys)  # type: ignore[attr-defined]
    choose_tool(page, "CartoonMix v1.0")
    # Enough steps that the task is still sampling when Kill is pressed.
    # (here about 0.1 s a step: 15 s in all, the first step after half a second).
    slow = {"prompt": "a slow cartoon", "samples": 1, "steps": 150, "width": 128, "height": 128}
    fill(page, slow)
    page.get_by_role("button", name="Run", exact=True).click()
    status = page.locator("#task-status")
    expect(status).to_have_text("Sampling", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#task-steps")).to_contain_text(re.compile(r"step \d+ / 150"))
    page.get_by_role("button", name="Kill").click()
    expect(status).to_have_text("Cancelled", timeout=60_000)
    expect(page.get_by_role("button", name="Kill")).to_be_disabled()
    task_id = page.locator("#task-title").inner_text().split()[1]
    task = Client(server.url, server.keys).detail(task_id)  # type: ignore[attr-defined]
    assert task["status"] == "task_cancel", task
    assert task["outputs"] == []
    assert int(task["canceltime"]) > 0


def test_cancel_removes_a_queued_task_with_a_key_only_project(page: Any, server: Server) -> None:
    keys = server.create_keys("key")
    assert keys["mode"] == "key" and keys["apikey"] != server.keys["apikey"]  # type: ignore[attr-defined]
    enter_key(page, {"apikey": keys["apikey"]})
    choose_tool(page, "CartoonMix v1.0")
    fill(page, {"prompt": "a queued cat", "samples": 1, "steps": 2, "width": 64, "height": 64})
    status = page.locator("#task-status")
    with workers_paused(server):  # nothing takes the task from the queue meanwhile
        page.get_by_role("button", name="Run", exact=True).click()
        expect(status).to_have_text("Queued")
        task_id = page.locator("#task-title").inner_text().split()[1]
        record = Client(server.url, keys).detail(task_id)
        if "queueposition" in record:  # the queue's figures, where the server gives them
            expect(page.locator("#task-queue")).to_contain_text(
                f"position {record['queueposition']} in queue"
            )
        page.get_by_role("button", name="Cancel").click()
        expect(status).to_have_text("Cancelled")
    assert Client(server.url, keys).detail(task_id)["status"] == "task_cancel"
    # Only this project's tasks are listed.
    expect(page.locator(".recent-item")).to_have_count(1)
    expect(page.locator(f'.recent-item[data-taskid="{task_id}"]')).to_contain_text("Cancelled")


def test_a_file_a_checkbox_and_a_range_are_sent(page: Any, server: Server, tmp_path: Any) -> None:
    enter_key(page, server.keys)  # type: ignore[attr-defined]
    choose_tool(page, "Form-Check")
    expect(page.get_by_label("tiled", exact=True)).not_to_be_checked()
    expect(page.get_by_label("strength", exact=True)).to_have_value("0.5")
    # The required file is checked in the browser first.
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#err-inputImage")).to_have_text("Request parameter [inputImage] required")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), (200, 40, 40)).save(photo)
    page.get_by_label("inputImage", exact=True).set_input_files(str(photo))
    page.get_by_label("tiled", exact=True).check()
    page.get_by_label("strength", exact=True).fill("0.8")
    expect(page.locator("output.range-value")).to_have_text("0.8")
    with page.expect_response(re.compile(r"/v1/File/Upload$")) as uploaded:
        page.get_by_role("button", name="Run", exact=True).click()
    upload = uploaded.value.json()
    assert upload["result"] is True, upload
    expect(page.locator("#task-status")).to_have_text("Done", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#task-outputs img")).to_have_count(1)
    task_id = page.locator("#task-title").inner_text().split()[1]
    params = Client(server.url, server.keys).detail(task_id)["parameters"]  # type: ignore[attr-defined]
    assert params["inputImage"] == upload["list"][0]["url"]
    assert params["tiled"] == "true"
    assert float(params["strength"]) == 0.8


def test_animatediff_runs_and_its_video_plays(page: Any, server: Server) -> None:
    enter_key(page, server.keys)  # type: ignore[attr-defined]
    choose_tool(page, "animate-diff")
    fill(
        page,
        {"prompt": "a lighthouse at dusk", "frameNumber": 3, "steps": 2, "width": 64, "height": 64},
    )
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.locator("#task-status")).to_have_text("Done", timeout=RUN_TIMEOUT_MS)
    video = page.locator("#task-outputs video")
    expect(video).to_have_count(1)
    page.wait_for_function(
        "() => { const v = document.querySelector('#task-outputs video');"
        " return v && v.readyState >= 2 && v.videoWidth > 0; }",
        timeout=30_000,
    )
    assert video.evaluate("v => v.videoWidth") == 64
    expect(page.get_by_role("link", name="Download 0.mp4")).to_be_visible()

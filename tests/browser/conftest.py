"""Fixtures of the playground's browser tests: one real `toonforge serve --tiny` for the
module, Debian's Chromium driven by Playwright, a fresh browser context per test, and a
screenshot of the page when a test fails (in test-artifacts/, path printed)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import sync_playwright

from support import Server, create_keys

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


# A tool of the test's own beside the catalog: the input types no bundled tool has (a file
# input, a checkbox, a range), on the SD 1.5 engine with small defaults.
FORM_CHECK = {
    "id": "951",
    "owner": "acme",
    "slug": "Form-Check",
    "title": "acme/Form-Check",
    "description": "Every kind of input.",
    "cover": "",
    "categories": ["model", "image-to-image"],
    "tags": [],
    "cps": "0.001",
    "inputs": [
        {"name": "inputImage", "label": "input-image", "type": "fileinput", "required": True},
        {"name": "prompt", "label": "prompt", "type": "textarea", "default": "a toon"},
        {"name": "negativePrompt", "label": "negativeprompt", "type": "textarea"},
        {"name": "tiled", "label": "tiled", "type": "checkbox", "default": "false"},
        {
            "name": "strength",
            "label": "strength",
            "type": "range",
            "default": 0.5,
            "min": 0,
            "max": 1,
        },
        {
            "name": "steps",
            "label": "steps",
            "type": "number",
            "default": 2,
            "integer": True,
            "min": 1,
            "max": 4,
        },
        {
            "name": "width",
            "label": "width",
            "type": "number",
            "default": 64,
            "integer": True,
            "min": 64,
            "max": 64,
        },
        {
            "name": "height",
            "label": "height",
            "type": "number",
            "default": 64,
            "integer": True,
            "min": 64,
            "max": 64,
        },
        {
            "name": "samples",
            "label": "samples",
            "type": "number",
            "default": 1,
            "integer": True,
            "min": 1,
            "max": 1,
        },
        {"name": "scale", "label": "scale", "type": "float", "default": 4, "min": 0, "max": 30},
        {"name": "seed", "label": "seed", "type": "text", "default": "7", "seed": True},
        {"name": "clipSkip", "label": "clip-skip", "type": "number", "default": 1, "integer": True},
        {
            "name": "scheduler",
            "label": "scheduler",
            "type": "select",
            "default": "EulerDiscreteScheduler",
            "options": [{"value": "EulerDiscreteScheduler", "label": "Euler"}],
        },
    ],
    "backend": {"family": "sd15"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tools = tmp_path_factory.mktemp("tools")
    (tools / "form-check.yaml").write_text(yaml.safe_dump(FORM_CHECK))
    srv = Server(
        tmp_path_factory.mktemp("playground"), TOONFORGE_EXTRA_TOOLS_DIRS=json.dumps([str(tools)])
    )
    srv.keys = create_keys(srv.env)  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs it")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _loopback_only(route: Any) -> None:
    """The page must work offline: anything not on this machine is refused (a tool's cover on
    a CDN falls back to its placeholder)."""
    host = re.sub(r"^[a-z]+://([^/:]+).*$", r"\1", route.request.url)
    if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort()


@pytest.fixture
def page(browser: Any, server: Server, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route("**/*", _loopback_only)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(server.url + "/")
    yield tab
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"{request.node.name}.png"
        tab.screenshot(path=str(shot), full_page=True)
        print(f"\nscreenshot of the failed page: {shot}")
        print(f"server log: {server.log_path}")
    context.close()
    assert not errors, f"script errors on the page: {errors}"

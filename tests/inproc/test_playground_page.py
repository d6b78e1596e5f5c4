"""The playground page at / and its assets: served by the API process from the package, with
nothing fetched from another host, and out of the API's contract."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest

from toonforge.api.routes_playground import ASSETS, playground_dir
from toonforge.services import Services
from toonforge.testing import in_process_app, settings_for_test


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Services]]:
    settings = settings_for_test(tmp_path_factory.mktemp("playground") / "data")
    with in_process_app(settings, dispatch_callbacks=False) as pair:
        yield pair


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.label_for: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name in ("src", "href"):
            if named.get(name):
                self.urls.append(str(named[name]))
        if tag == "label" and named.get("for"):
            self.label_for.append(str(named["for"]))
        if named.get("id"):
            self.ids.append(str(named["id"]))


def test_the_page_and_its_assets_are_served_from_this_server(app: tuple[Any, Services]) -> None:
    http = app[0]
    r = http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert not re.search(r"(https?:)?//", r.text), "the page names an outside address"
    links = _Links()
    links.feed(r.text)
    assets = [u for u in links.urls if u.startswith("/playground/")]
    assert {u.rsplit("/", 1)[1] for u in assets} == set(ASSETS)
    for url in assets:
        answer = http.get(url)
        assert answer.status_code == 200, url
        assert answer.headers["content-type"] == ASSETS[url.rsplit("/", 1)[1]]
        text = answer.text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert not re.search(r"https?://", text), f"{url} names an outside address"
    # Every label names a field of the page.
    assert links.label_for and set(links.label_for) <= set(links.ids)


def test_unknown_assets_are_404_in_the_envelope(app: tuple[Any, Services]) -> None:
    http = app[0]
    for path in ("/playground/nothing.js", "/playground/..%2Fapp.py", "/playground/index.html"):
        r = http.get(path)
        assert r.status_code == 404, path
        assert r.json()["result"] is False


def test_the_playground_is_not_in_the_api_document(app: tuple[Any, Services]) -> None:
    paths = app[0].get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/playground") for p in paths)


def test_the_package_ships_every_asset() -> None:
    for name in (*ASSETS, "index.html"):
        assert (playground_dir() / name).is_file(), name

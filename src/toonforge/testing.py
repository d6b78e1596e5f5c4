"""Test and benchmark support shipped with the package: a signed client for any toonforge
server (in process or over HTTP) and an in-process app on a database of its own.

`tests/` and `bench/` both import this, so a request is signed one way everywhere.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from toonforge.api.auth import signature_for
from toonforge.services import Services, build_services
from toonforge.settings import Settings, load_settings
from toonforge.tasks.projects import create_project

_NONCES = itertools.count(int(time.time() * 1000) * 1000)


@dataclass
class Keys:
    apikey: str
    apisecret: str
    mode: str = "signature"
    projectid: int = 0
    webhooksecret: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Keys:
        return cls(
            apikey=str(data["apikey"]),
            apisecret=str(data["apisecret"]),
            mode=str(data.get("mode", "signature")),
            projectid=int(data.get("projectid", 0)),
            webhooksecret=str(data.get("webhooksecret", "")),
        )


def signed_headers(keys: Keys, nonce: str | None = None) -> dict[str, str]:
    """The three headers of the hosted service's signature scheme (key only in key mode)."""
    headers = {"x-api-key": keys.apikey}
    if keys.mode == "signature":
        nonce = nonce or str(next(_NONCES))
        headers["x-nonce"] = nonce
        headers["x-signature"] = signature_for(keys.apikey, keys.apisecret, nonce)
    return headers


class SignedClient:
    """Signs every request; `http` is any httpx.Client (real URL or an in-process app)."""

    def __init__(self, http: httpx.Client, keys: Keys) -> None:
        self.http = http
        self.keys = keys

    def post(self, path: str, body: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        headers = {
            **signed_headers(self.keys),
            "Content-Type": "application/json",
            **kw.pop("headers", {}),
        }
        return self.http.post(path, content=json.dumps(body or {}), headers=headers, **kw)

    def ok(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST and require a successful envelope."""
        r = self.post(path, body)
        data = r.json()
        assert r.status_code == 200 and data["result"] is True, (r.status_code, data)
        return dict(data)


def new_project(services: Services, *, mode: str = "signature", **opts: Any) -> Keys:
    with services.sessions() as session:
        creds = create_project(session, name=opts.pop("name", "test"), auth_mode=mode, **opts)
        session.commit()
    return Keys(creds.api_key, creds.api_secret, creds.auth_mode, creds.project_id)


def settings_for_test(
    data_dir: Path, database_url: str | None = None, **overrides: Any
) -> Settings:
    """Settings for a server of a test's own: its own data folder, offline mode."""
    return load_settings(data_dir=data_dir, database_url=database_url, tiny=True, **overrides)


@contextmanager
def in_process_app(settings: Settings, **app_options: Any) -> Iterator[tuple[Any, Services]]:
    """The ASGI app on Starlette's TestClient (lifespan run), with its services."""
    from fastapi.testclient import TestClient

    from toonforge.api.app import create_app

    services = build_services(settings)
    app = create_app(services, **app_options)
    try:
        with TestClient(app, base_url="http://testserver", raise_server_exceptions=False) as tc:
            yield tc, services
    finally:
        services.close()

"""What the synchronous and asynchronous clients share: paths, bodies, answers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import httpx

from toonforge.client.errors import ApiError, AuthenticationError
from toonforge.client.records import TERMINAL, Event, Task, TaskList
from toonforge.client.signing import auth_headers

__all__ = ["TERMINAL"]

DEFAULT_TIMEOUT = 60.0  # seconds, for one HTTP request
DEFAULT_WAIT = 600.0  # seconds, for a task to end in `run`/`wait`
POLL_SECONDS = 0.5
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class Endpoint:
    """The server's address (its base URL ends with /v1) and the project's credentials."""

    def __init__(self, base_url: str, api_key: str, api_secret: str | None) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.api_secret = api_secret or None

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def absolute(self, url: str) -> str:
        """An output's URL as a full address (servers give full ones; a path is read
        against the server's address)."""
        return urljoin(self.base_url + "/", url)

    def socket_url(self) -> str:
        parts = urlsplit(self.base_url)
        scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        return urlunsplit((scheme, parts.netloc, parts.path + "/socket", "", ""))

    def request(self, path: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        """httpx request arguments for a signed POST of a JSON body."""
        return {
            "method": "POST",
            "url": self.url(path),
            "content": json.dumps(dict(body or {})),
            "headers": {
                **auth_headers(self.api_key, self.api_secret),
                "Content-Type": "application/json",
            },
        }


def run_path(tool: str) -> str:
    """`owner/slug`, the slug as on the tool page ('futurist/CartoonMix v1.0') or clean
    ('futurist/cartoonmix-v1-0'); a full `Run/...` path is accepted too."""
    text = tool.strip().strip("/")
    text = text.removeprefix("v1/").removeprefix("Run/")
    owner, _, slug = text.partition("/")
    if not owner or not slug:
        raise ValueError(f"tool must be OWNER/SLUG, e.g. 'futurist/CartoonMix v1.0', not {tool!r}")
    return f"Run/{quote(owner, safe='')}/{quote(slug, safe='')}"


def task_ref(task: str | int | Task) -> dict[str, str]:
    """A Task/* body naming the task by id (digits) or by its socket access token."""
    if isinstance(task, Task):
        return {"taskid": task.id}
    text = str(task).strip()
    return {"taskid": text} if text.isdigit() else {"tasktoken": text}


def answer(response: httpx.Response) -> dict[str, Any]:
    """The envelope of a successful answer; an ApiError with the API's message otherwise."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ApiError(
            f"HTTP {response.status_code} without an API answer from {response.request.url}",
            status=response.status_code,
        )
    if data.get("result") is True and response.status_code < 400:
        return data
    errors = [e for e in data.get("errors") or [] if isinstance(e, dict)]
    first = errors[0] if errors else {}
    message = str(first.get("message") or f"HTTP {response.status_code}")
    code = first.get("code")
    kind = AuthenticationError if response.status_code == 401 else ApiError
    raise kind(
        message,
        code=int(code) if isinstance(code, int | str) and str(code).isdigit() else None,
        status=response.status_code,
        errors=errors,
    )


def first_task(data: dict[str, Any]) -> Task:
    tasks = data.get("tasklist") or []
    if not tasks:
        raise ApiError("The answer holds no task.", status=200)
    return Task.of(tasks[0])


def task_list(data: dict[str, Any]) -> TaskList:
    tasks = [Task.of(t) for t in data.get("tasklist") or []]
    try:
        total = int(data.get("total", len(tasks)))
    except (TypeError, ValueError):
        total = len(tasks)
    return TaskList(total=total, tasks=tasks)


def list_body(
    status: str | None, model: str | None, sort: str, order: str, start: int, limit: int
) -> dict[str, Any]:
    body: dict[str, Any] = {"sort": sort, "order": order, "start": start, "limit": limit}
    if status:
        body["status"] = status
    if model:
        body["modelName"] = model
    return body


def hello(token: str) -> str:
    return json.dumps({"type": "task_info", "tasktoken": token})


def event_of(raw: str | bytes) -> Event | None:
    """A socket frame as an Event; None for a refusal (`result: false`)."""
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("result") is False:
        return None
    return Event(type=str(data.get("type", "")), message=data.get("message"), raw=data)


def output_path(folder: Path, name: str, index: int) -> Path:
    """Where an output file is saved: its own name, reduced to safe characters."""
    safe = _SAFE_NAME.sub("_", Path(name).name) or f"output-{index}"
    return folder / safe

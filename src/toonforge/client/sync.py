"""`Client`: the toonforge API (or the hosted service's contract) over httpx, blocking."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from toonforge.client import common
from toonforge.client.errors import TaskTimeout
from toonforge.client.records import Event, Task, TaskList

EventHandler = Callable[[Event], Any]


class Client:
    """Signed calls to one project of a server: `base_url` ends with /v1 (e.g.
    http://127.0.0.1:8000/v1); without `api_secret`, only the key is sent (key-only
    projects)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str | None = None,
        *,
        timeout: float = common.DEFAULT_TIMEOUT,
        http: httpx.Client | None = None,
    ) -> None:
        self.endpoint = common.Endpoint(base_url, api_key, api_secret)
        self.http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def call(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST a signed JSON body to `path` (e.g. "Task/Detail"); the answer's envelope."""
        return common.answer(self.http.request(**self.endpoint.request(path, body)))

    # -- tasks -----------------------------------------------------------------------------

    def run(
        self,
        tool: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        wait: bool = True,
        timeout: float = common.DEFAULT_WAIT,
        on_event: EventHandler | None = None,
    ) -> Task:
        """Queue a task of `tool` ('owner/slug'); with `wait`, return it once it has ended
        (its outputs listed), else as it is now."""
        queued = self.call(common.run_path(tool), inputs)
        token = str(queued["socketaccesstoken"])
        if wait:
            return self.wait(token, timeout=timeout, on_event=on_event)
        return self.detail(str(queued["taskid"]))

    def wait(
        self,
        task: str | Task,
        *,
        timeout: float = common.DEFAULT_WAIT,
        on_event: EventHandler | None = None,
    ) -> Task:
        """Wait for a task (its Task, id or token) to end: on the WebSocket, or by polling
        Task/Detail when the socket cannot be used. Raises TaskTimeout after `timeout`."""
        current = task if isinstance(task, Task) else self.detail(task)
        deadline = time.monotonic() + timeout
        if not current.done and not self._follow_socket(current, deadline, on_event):
            current = self._poll(current, deadline, on_event)
        return self.detail(current.id)

    def detail(self, task: str | int | Task) -> Task:
        """A task by id or socket access token."""
        return common.first_task(self.call("Task/Detail", common.task_ref(task)))

    def kill(self, task: str | int | Task) -> Task:
        """Stop a running task (it ends in task_cancel)."""
        return common.first_task(self.call("Task/Kill", common.task_ref(task)))

    def cancel(self, task: str | int | Task) -> Task:
        """Remove a task that is still queued."""
        return common.first_task(self.call("Task/Cancel", common.task_ref(task)))

    def delete_outputs(self, task: str | int | Task) -> Task:
        """Delete a finished task's output files (and the uploads it used)."""
        return common.first_task(self.call("Task/InputOutputDelete", common.task_ref(task)))

    def list_tasks(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        sort: str = "id",
        order: str = "DESC",
        start: int = 0,
        limit: int = 20,
    ) -> TaskList:
        """This project's tasks (Task/List), newest first by default."""
        body = common.list_body(status, model, sort, order, start, limit)
        return common.task_list(self.call("Task/List", body))

    def download(self, task: Task, folder: str | Path) -> list[Path]:
        """Save the task's output files in `folder` (made if missing); their paths."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        for i, output in enumerate(task.outputs):
            path = common.output_path(target, output.name, i)
            with self.http.stream("GET", self.endpoint.absolute(output.url)) as r:
                if r.status_code != 200:
                    r.read()
                    common.answer(r)
                with path.open("wb") as f:
                    for chunk in r.iter_bytes():
                        f.write(chunk)
            paths.append(path)
        return paths

    # -- waiting ---------------------------------------------------------------------------

    def _follow_socket(self, task: Task, deadline: float, on_event: EventHandler | None) -> bool:
        """True when the socket saw the task end; False when it could not be used."""
        try:
            from websockets.exceptions import ConnectionClosed, WebSocketException
            from websockets.sync.client import connect
        except ImportError:
            return False
        try:
            with connect(self.endpoint.socket_url(), open_timeout=10) as ws:
                ws.send(common.hello(task.socketaccesstoken))
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TaskTimeout(f"task {task.id} did not end in time", self.detail(task))
                    try:
                        raw = ws.recv(timeout=remaining)
                    except TimeoutError:
                        continue
                    event = common.event_of(raw)
                    if event is None:
                        return False
                    if on_event is not None:
                        on_event(event)
                    if event.type in common.TERMINAL:
                        return True
        except TaskTimeout:
            raise
        except (OSError, ConnectionClosed, WebSocketException):
            return False

    def _poll(self, task: Task, deadline: float, on_event: EventHandler | None) -> Task:
        status = ""
        while True:
            task = self.detail(task.id)
            if task.status != status:
                status = task.status
                if on_event is not None:
                    on_event(Event(type=status, message=None, raw=task.raw))
            if task.done:
                return task
            if time.monotonic() >= deadline:
                raise TaskTimeout(f"task {task.id} did not end in time", task)
            time.sleep(common.POLL_SECONDS)

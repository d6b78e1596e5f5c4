"""`AsyncClient`: the same methods as `Client`, for asyncio (httpx.AsyncClient and the
`websockets` asyncio client)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from toonforge.client import common
from toonforge.client.errors import TaskTimeout
from toonforge.client.records import Event, Task, TaskList

EventHandler = Callable[[Event], Any | Awaitable[Any]]


class AsyncClient:
    """Signed calls to one project of a server, see `Client`; `on_event` may be a plain
    function or a coroutine function."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str | None = None,
        *,
        timeout: float = common.DEFAULT_TIMEOUT,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.endpoint = common.Endpoint(base_url, api_key, api_secret)
        self.http = http or httpx.AsyncClient(timeout=timeout)
        self._owns_http = http is None

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def call(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return common.answer(await self.http.request(**self.endpoint.request(path, body)))

    # -- tasks -----------------------------------------------------------------------------

    async def run(
        self,
        tool: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        wait: bool = True,
        timeout: float = common.DEFAULT_WAIT,
        on_event: EventHandler | None = None,
    ) -> Task:
        queued = await self.call(common.run_path(tool), inputs)
        token = str(queued["socketaccesstoken"])
        if wait:
            return await self.wait(token, timeout=timeout, on_event=on_event)
        return await self.detail(str(queued["taskid"]))

    async def wait(
        self,
        task: str | Task,
        *,
        timeout: float = common.DEFAULT_WAIT,
        on_event: EventHandler | None = None,
    ) -> Task:
        current = task if isinstance(task, Task) else await self.detail(task)
        deadline = time.monotonic() + timeout
        if not current.done and not await self._follow_socket(current, deadline, on_event):
            current = await self._poll(current, deadline, on_event)
        return await self.detail(current.id)

    async def detail(self, task: str | int | Task) -> Task:
        return common.first_task(await self.call("Task/Detail", common.task_ref(task)))

    async def kill(self, task: str | int | Task) -> Task:
        return common.first_task(await self.call("Task/Kill", common.task_ref(task)))

    async def cancel(self, task: str | int | Task) -> Task:
        return common.first_task(await self.call("Task/Cancel", common.task_ref(task)))

    async def delete_outputs(self, task: str | int | Task) -> Task:
        body = common.task_ref(task)
        return common.first_task(await self.call("Task/InputOutputDelete", body))

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        sort: str = "id",
        order: str = "DESC",
        start: int = 0,
        limit: int = 20,
    ) -> TaskList:
        body = common.list_body(status, model, sort, order, start, limit)
        return common.task_list(await self.call("Task/List", body))

    async def download(self, task: Task, folder: str | Path) -> list[Path]:
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        for i, output in enumerate(task.outputs):
            path = common.output_path(target, output.name, i)
            async with self.http.stream("GET", self.endpoint.absolute(output.url)) as r:
                if r.status_code != 200:
                    await r.aread()
                    common.answer(r)
                with path.open("wb") as f:
                    async for chunk in r.aiter_bytes():
                        f.write(chunk)
            paths.append(path)
        return paths

    # -- waiting ---------------------------------------------------------------------------

    async def _emit(self, on_event: EventHandler | None, event: Event) -> None:
        if on_event is not None:
            result = on_event(event)
            if inspect.isawaitable(result):
                await result

    async def _follow_socket(
        self, task: Task, deadline: float, on_event: EventHandler | None
    ) -> bool:
        try:
            from websockets.asyncio.client import connect
            from websockets.exceptions import ConnectionClosed, WebSocketException
        except ImportError:
            return False
        try:
            async with connect(self.endpoint.socket_url(), open_timeout=10) as ws:
                await ws.send(common.hello(task.socketaccesstoken))
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        latest = await self.detail(task)
                        raise TaskTimeout(f"task {task.id} did not end in time", latest)
                    try:
                        raw = await asyncio.wait_for(ws.recv(), remaining)
                    except TimeoutError:
                        continue
                    event = common.event_of(raw)
                    if event is None:
                        return False
                    await self._emit(on_event, event)
                    if event.type in common.TERMINAL:
                        return True
        except TaskTimeout:
            raise
        except (OSError, ConnectionClosed, WebSocketException):
            return False

    async def _poll(self, task: Task, deadline: float, on_event: EventHandler | None) -> Task:
        status = ""
        while True:
            task = await self.detail(task.id)
            if task.status != status:
                status = task.status
                await self._emit(on_event, Event(type=status, message=None, raw=task.raw))
            if task.done:
                return task
            if time.monotonic() >= deadline:
                raise TaskTimeout(f"task {task.id} did not end in time", task)
            await asyncio.sleep(common.POLL_SECONDS)

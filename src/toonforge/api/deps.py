"""Dependencies shared by the routes (FastAPI `Annotated` aliases).

Order matters and is built in, not left to parameter order: `BodyDep` depends on
`ProjectDep`, so a signed route authenticates from the headers before it reads a byte of
the body. Public routes (the catalog) use `PublicBodyDep`.

There is deliberately no session dependency: a route opens its session in a `with` block
(`services.read_sessions()` to read, `services.sessions()` to write), so its pooled
connection is back in the pool before the route's thread is left. A yield-dependency keeps
the connection until its teardown gets a thread of its own; under load, requests holding
connections then wait for threads that wait for connections.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from toonforge.api.auth import ReplayGuard, api_key_of, check_headers
from toonforge.api.body import read_body
from toonforge.ops.logging import bind as bind_log
from toonforge.services import Services
from toonforge.tasks.projects import ProjectCache, ProjectInfo


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def get_project(request: Request) -> ProjectInfo:
    """The caller's project, from the headers alone (cached lookups stay off the threads)."""
    services: Services = request.app.state.services
    cache: ProjectCache = request.app.state.projects
    api_key = api_key_of(request)
    project = cache.peek(api_key) if api_key else None
    if project is None and api_key:
        project = await run_in_threadpool(cache.get, services.read_sessions, api_key)
    project = check_headers(request, project, services.settings)
    bind_log(project_id=project.id)  # on every line logged for the rest of the request
    return project


async def get_body(
    request: Request, _project: Annotated[ProjectInfo, Depends(get_project)]
) -> dict[str, Any]:
    return await read_body(request)


async def get_public_body(request: Request) -> dict[str, Any]:
    return await read_body(request)


def get_replay_guard(request: Request) -> ReplayGuard:
    return request.app.state.replay_guard  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]
ProjectDep = Annotated[ProjectInfo, Depends(get_project)]
BodyDep = Annotated[dict[str, Any], Depends(get_body)]
PublicBodyDep = Annotated[dict[str, Any], Depends(get_public_body)]
ReplayGuardDep = Annotated[ReplayGuard, Depends(get_replay_guard)]

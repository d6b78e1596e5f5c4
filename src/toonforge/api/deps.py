"""Dependencies shared by the routes (FastAPI `Annotated` aliases)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from toonforge.api.auth import authenticate
from toonforge.api.body import read_body
from toonforge.services import Services
from toonforge.tasks.models import Project


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def get_session(services: Annotated[Services, Depends(get_services)]) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


def get_read_session(services: Annotated[Services, Depends(get_services)]) -> Iterator[Session]:
    with services.read_sessions() as session:
        yield session


async def get_body(request: Request) -> dict[str, Any]:
    return await read_body(request)


def get_project(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    session: Annotated[Session, Depends(get_session)],
) -> Project:
    return authenticate(request, session, services.settings)


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]
ReadSessionDep = Annotated[Session, Depends(get_read_session)]
BodyDep = Annotated[dict[str, Any], Depends(get_body)]
ProjectDep = Annotated[Project, Depends(get_project)]

"""The ASGI application: routes, the envelope on every answer, the callback dispatcher."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toonforge import __version__
from toonforge.api import (
    routes_files,
    routes_ops,
    routes_playground,
    routes_private,
    routes_run,
    routes_task,
    routes_task_list,
    routes_tool,
    routes_upload,
    socket,
)
from toonforge.api.auth import ReplayGuard
from toonforge.api.envelope import GENERAL, ApiError, error_body, error_response
from toonforge.api.hub import EventHub
from toonforge.api.openapi import install as install_openapi
from toonforge.callbacks.dispatcher import CallbackDispatcher
from toonforge.ops.db_collector import DatabaseCollector
from toonforge.ops.metrics import HttpMetrics, RequestObservation
from toonforge.services import Services
from toonforge.tasks.db import DB_OUTAGE_ERRORS, DB_UNAVAILABLE
from toonforge.tasks.projects import ProjectCache
from toonforge.tasks.retention import RetentionSweeper

log = logging.getLogger("toonforge.api")


RETRY_AFTER_SECONDS = "2"


def create_app(services: Services, *, dispatch_callbacks: bool = True) -> FastAPI:
    settings = services.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One thread per pooled connection: no request holds a thread waiting for another
        # request's connection.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        hub = EventHub(services)
        app.state.hub = hub
        await hub.start()
        dispatcher = CallbackDispatcher(services) if dispatch_callbacks else None
        if dispatcher:
            dispatcher.start()
        sweeper = RetentionSweeper(services)
        sweeper.start()
        try:
            yield
        finally:
            sweeper.stop()
            if dispatcher:
                dispatcher.stop()
            await hub.stop()

    app = FastAPI(
        title="toonforge",
        version=__version__,
        lifespan=lifespan,
        # /docs and /redoc are served by toonforge.api.openapi from local assets.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.projects = ProjectCache(settings.auth_cache_seconds)
    app.state.replay_guard = ReplayGuard(settings)
    for module in (routes_run, routes_task, routes_tool, routes_files, routes_private, socket):
        app.include_router(module.router)
    app.include_router(routes_task_list.router)
    app.include_router(routes_upload.router)
    # The playground page at / and its assets (not part of the API's contract).
    app.include_router(routes_playground.router)
    app.add_middleware(UnexpectedErrors)
    # /healthz, /readyz, /metrics; the request counts and log context wrap everything.
    app.include_router(routes_ops.router)
    app.state.http_metrics = HttpMetrics()
    app.state.db_collector = DatabaseCollector(services)
    app.add_middleware(RequestObservation, metrics=app.state.http_metrics)

    # The OpenAPI document (the contract) and its offline /docs and /redoc.
    install_openapi(app, lambda: services.catalog)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            return JSONResponse(
                error_body([{"code": GENERAL, "message": "Error parsing url."}]), status_code=404
            )
        return JSONResponse(
            error_body([{"code": GENERAL, "message": str(exc.detail)}]),
            status_code=exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, _exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body([{"code": GENERAL, "message": "Request parameters are invalid."}])
        )

    # Errors that mean "the database cannot answer now", as opposed to a bug: 503 with
    # Retry-After, so clients wait and retry.
    for error_class in DB_OUTAGE_ERRORS:
        app.add_exception_handler(error_class, _database_unavailable)

    return app


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable on %s: %s", request.url.path, exc)
    return database_unavailable_response()


def database_unavailable_response() -> JSONResponse:
    return JSONResponse(
        error_body([{"code": GENERAL, "message": DB_UNAVAILABLE}]),
        status_code=503,
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


class UnexpectedErrors:
    """The last line: an exception no handler knows is logged with its traceback and
    answered with the envelope (500, never on purpose), and the connection stays usable.
    (Starlette's own handler for Exception re-raises into the server, which drops the
    connection.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.exception("unexpected error on %s", scope.get("path"), exc_info=exc)
            if started:
                return  # the answer is half sent: nothing more can be said on it
            if isinstance(exc, DB_OUTAGE_ERRORS):
                response = database_unavailable_response()
            else:
                response = JSONResponse(
                    error_body([{"code": GENERAL, "message": "Internal server error."}]),
                    status_code=500,
                )
            await response(scope, receive, send)


def create_app_from_env() -> FastAPI:
    """The app of one API process among several (`serve` with `TOONFORGE_API_PROCESSES` > 1
    starts each with this factory): settings from the environment `serve` passed on; the
    database was migrated by `serve` already."""
    from toonforge.ops.logging import configure_logging
    from toonforge.services import build_services
    from toonforge.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_format)  # a fresh process: its logs as serve's
    return create_app(build_services(settings, migrate=False))

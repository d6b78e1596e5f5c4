"""The ASGI application: routes, the envelope on every answer, the callback dispatcher."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from toonforge import __version__
from toonforge.api import (
    routes_files,
    routes_private,
    routes_run,
    routes_task,
    routes_tool,
    socket,
)
from toonforge.api.envelope import GENERAL, ApiError, error_body, error_response
from toonforge.api.openapi import install as install_openapi
from toonforge.callbacks.dispatcher import CallbackDispatcher
from toonforge.services import Services

log = logging.getLogger("toonforge.api")


def create_app(services: Services, *, dispatch_callbacks: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dispatcher = CallbackDispatcher(services) if dispatch_callbacks else None
        if dispatcher:
            dispatcher.start()
        try:
            yield
        finally:
            if dispatcher:
                dispatcher.stop()

    app = FastAPI(
        title="toonforge",
        version=__version__,
        lifespan=lifespan,
        # /docs and /redoc are served by toonforge.api.openapi from local assets.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    for module in (routes_run, routes_task, routes_tool, routes_files, routes_private, socket):
        app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, object]:
        return {"result": True, "offlinemode": services.settings.tiny, "version": __version__}

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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never on purpose: the details go to the log, the client gets the envelope only.
        log.exception("unexpected error on %s", request.url.path, exc_info=exc)
        return JSONResponse(
            error_body([{"code": GENERAL, "message": "Internal server error."}]), status_code=500
        )

    return app

"""Operations endpoints, outside the task API: `/healthz` (the process is alive; touches
nothing), `/readyz` (the database, the storage, live workers; 503 when not ready), `/metrics`
(Prometheus text). None needs a project's key; with `TOONFORGE_METRICS_TOKEN` set, `/readyz`
and `/metrics` want it as a bearer token (`/healthz` stays open: it says nothing)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from toonforge import __version__
from toonforge.ops.db_collector import DatabaseCollector
from toonforge.ops.metrics import CONTENT_TYPE, HttpMetrics
from toonforge.ops.readiness import check_readiness
from toonforge.services import Services

router = APIRouter(include_in_schema=False)


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def _token_refused(request: Request) -> JSONResponse | None:
    token = _services(request).settings.metrics_token
    if not token:
        return None
    given = request.headers.get("authorization", "")
    if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return None
    return JSONResponse(
        {
            "result": False,
            "errors": [
                {
                    "code": 0,
                    "message": "Authorization: a bearer token "
                    "matching TOONFORGE_METRICS_TOKEN is required.",
                }
            ],
        },
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


@router.get("/healthz")
def healthz(request: Request) -> dict[str, object]:
    """Alive: answers without touching the database."""
    return {"result": True, "offlinemode": _services(request).settings.tiny, "version": __version__}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    refused = _token_refused(request)
    if refused is not None:
        return refused
    body = check_readiness(_services(request))
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    refused = _token_refused(request)
    if refused is not None:
        return refused
    http_metrics: HttpMetrics = request.app.state.http_metrics
    collector: DatabaseCollector = request.app.state.db_collector
    return Response(http_metrics.render(collector), media_type=CONTENT_TYPE)

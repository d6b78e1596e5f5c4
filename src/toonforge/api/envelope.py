"""The hosted service's answer shape: `result`, `errors` [{code, message}], then fields."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

GENERAL = 0
NOT_FOUND = 1
CONCURRENCY = 96
QUOTA = 97
SIGN_IN = 98
BEARER = 99


class ApiError(Exception):
    """An error answered in the envelope. HTTP 200 for errors about the request's content
    (as the hosted service does), 401 for authentication, 404 for unknown endpoints."""

    def __init__(
        self,
        message: str,
        *,
        code: int = GENERAL,
        status: int = 200,
        errors: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or [{"code": code, "message": message}]
        self.extra = extra or {}


def ok(**fields: Any) -> dict[str, Any]:
    return {"result": True, "errors": [], **fields}


def error_body(errors: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"result": False, "errors": errors, **extra}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.errors, **exc.extra), status_code=exc.status)

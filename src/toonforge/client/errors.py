"""What the client raises."""

from __future__ import annotations

from typing import Any


class ToonforgeError(Exception):
    """Base class of the client's errors."""


class ApiError(ToonforgeError):
    """An answer with `result: false` (or no envelope at all): the API's first message and
    code, the HTTP status, and every error the API listed."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: int = 200,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.errors = errors or [{"code": code, "message": message}]

    def __str__(self) -> str:
        code = "" if self.code is None else f" (code {self.code})"
        return f"{self.message}{code}"


class AuthenticationError(ApiError):
    """HTTP 401: unknown or revoked key, bad signature, replayed request, IP not allowed."""


class TaskTimeout(ToonforgeError, TimeoutError):
    """The task did not end within the time given to `run`/`wait`; `task` is its last known
    state (it goes on running on the server: kill it if it is no longer wanted)."""

    def __init__(self, message: str, task: Any) -> None:
        super().__init__(message)
        self.task = task

"""Logging for every toonforge process: human text by default, one JSON object per line with
`TOONFORGE_LOG_FORMAT=json`.

Lines logged while a task or a request is handled carry its `task_id` and `project_id`. They
come from a context variable holding a small mutable dict: the API's middleware gives each
request its own (the route fills it in once the project, then the task, is known; FastAPI
runs sync code in threads with a copy of the context, and a copy still points at the same
dict), the worker one per task. A filter on the handler copies them onto every record, so
the lines of any logger (uvicorn's, SQLAlchemy's) get them too.
"""

from __future__ import annotations

import contextvars
import importlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

TEXT, JSON = "text", "json"
FORMATS = (TEXT, JSON)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("task_id", "project_id")

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "toonforge_log_context", default=None
)


@contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """A fresh context (a request, a task) for the lines logged inside the block."""
    holder = {k: v for k, v in fields.items() if v is not None}
    token = _context.set(holder)
    try:
        yield holder
    finally:
        _context.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current context (no-op outside one)."""
    holder = _context.get()
    if holder is not None:
        holder.update({k: v for k, v in fields.items() if v is not None})


def current() -> dict[str, Any]:
    return dict(_context.get() or {})


def thread_target(target: Callable[..., Any]) -> Callable[..., Any]:
    """`target` run in a copy of the caller's context: a thread started for a task (its
    lease heartbeat) logs with the task's fields."""
    ctx = contextvars.copy_context()

    def run(*args: Any, **kwargs: Any) -> Any:
        return ctx.run(target, *args, **kwargs)

    return run


class ContextFilter(logging.Filter):
    """Copies the current context's fields onto each record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        holder = _context.get()
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, holder.get(name) if holder else None)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then task_id
    and project_id when known, and the traceback as `exception`."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int((record.created - seconds) * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The human format, with `[task N project M]` after the logger when known."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = [f"{n.split('_')[0]} {getattr(record, n)}" for n in CONTEXT_FIELDS]
        tags = [t for t, n in zip(tags, CONTEXT_FIELDS, strict=True) if getattr(record, n, None)]
        if not tags:
            return text
        head = f"{record.name}:"
        return text.replace(head, f"{head[:-1]} [{', '.join(tags)}]:", 1)


_configured_lock = threading.Lock()
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(log_format: str = TEXT, level: int = logging.INFO) -> None:
    """Set up the root logger of this process (idempotent: a second call replaces the first
    handler). In JSON mode uvicorn's loggers are routed through it too."""
    fmt = log_format if log_format in FORMATS else TEXT
    with _configured_lock:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if getattr(handler, "_toonforge", False):
                root.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler._toonforge = True  # type: ignore[attr-defined]
        handler.addFilter(ContextFilter())
        handler.setFormatter(JsonFormatter() if fmt == JSON else TextFormatter(TEXT_FORMAT))
        root.addHandler(handler)
        root.setLevel(level)
        if fmt == JSON:
            for name in UVICORN_LOGGERS:
                route_through_root(logging.getLogger(name))
            logging.captureWarnings(True)  # Python's warnings as log lines too


def adopt_model_library_logs() -> None:
    """For a JSON-logging worker, once the model stack is imported: transformers' and
    diffusers' own handlers removed so their lines go through ours, their progress bars
    (written straight to the terminal) off."""
    for name in ("transformers", "diffusers"):
        try:
            module = importlib.import_module(f"{name}.utils.logging")
        except ImportError:
            continue
        for action in ("disable_default_handler", "enable_propagation", "disable_progress_bar"):
            call = getattr(module, action, None)
            if call is not None:
                call()


def route_through_root(logger: logging.Logger) -> None:
    """Drop a library logger's own handlers so its lines reach the root handler. The
    access logger keeps the `propagate` uvicorn gave it: off unless the access log is on."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    if logger.name != "uvicorn.access":
        logger.propagate = True

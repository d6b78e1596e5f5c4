"""`/readyz`: whether this server can take work now. Ready means the database answers, the
output storage takes a write, and at least one worker is live (its heartbeat in the
`workers` table is recent, on whatever host). Each tool says whether a live worker can run
it; a tool nobody can run does not make the server unready (the others still run)."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

from toonforge.services import Services
from toonforge.tasks.workers import live_workers

log = logging.getLogger("toonforge.readiness")

PROBE_PREFIX = ".readyz"


def check_readiness(services: Services) -> dict[str, Any]:
    """The /readyz body: `ready`, one entry per check (`ok`, and `error` when it failed)
    under `checks`, and `tools`: per tool key, `ready` and how many live workers can run
    it."""
    checks: dict[str, dict[str, Any]] = {}
    workers: list[Any] | None = None
    try:
        with services.read_sessions() as session:
            workers = live_workers(session, services.settings.heartbeat_seconds)
        checks["database"] = {"ok": True}
    except Exception as exc:  # unreachable, restarting, locked, not migrated
        log.warning("readyz: database check failed: %s", exc)
        checks["database"] = {
            "ok": False,
            "error": f"the database cannot be reached ({type(exc).__name__})",
        }
    checks["storage"] = _storage_check(services)
    if workers is None:
        checks["workers"] = {"ok": False, "error": "unknown: the database cannot be reached"}
    elif not workers:
        checks["workers"] = {
            "ok": False,
            "live": 0,
            "error": "no live worker (none has sent a heartbeat recently)",
        }
    else:
        checks["workers"] = {"ok": True, "live": len(workers)}
    tools: dict[str, dict[str, Any]] = {}
    for manifest in services.catalog:
        able = sum(1 for w in workers or [] if manifest.key in (w.tools or []))
        tools[manifest.key] = {"ready": able > 0, "workers": able}
    return {
        "ready": all(c["ok"] for c in checks.values()),
        "checks": checks,
        "tools": tools,
        "time": time.time(),
    }


def _storage_check(services: Services) -> dict[str, Any]:
    """Write and remove a small file where outputs go."""
    key = f"{PROBE_PREFIX}/{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        services.storage.put(key, b"ok")
        services.storage.delete_prefix(key)
    except Exception as exc:  # full disk, read-only, permissions, storage unreachable
        log.warning("readyz: storage check failed: %s", exc)
        return {"ok": False, "error": f"the output storage is not writable ({type(exc).__name__})"}
    return {"ok": True}

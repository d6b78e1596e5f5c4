"""Projects: API key and secret, authentication mode, IP allow-list, task limit."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from toonforge.callbacks.signing import new_webhook_secret
from toonforge.tasks.models import Project, RequestNonce
from toonforge.tasks.tokens import random_token

AUTH_MODES = ("signature", "key")


@dataclass(frozen=True)
class ProjectInfo:
    """What a request needs of its project, detached from any session (it is cached)."""

    id: int
    name: str
    api_key: str
    api_secret: str
    auth_mode: str
    allowed_ips: str
    max_running_tasks: int
    webhook_secret: str

    @classmethod
    def of(cls, p: Project) -> ProjectInfo:
        return cls(
            p.id,
            p.name,
            p.api_key,
            p.api_secret,
            p.auth_mode,
            p.allowed_ips,
            p.max_running_tasks,
            p.webhook_secret,
        )


@dataclass
class NewCredentials:
    project_id: int
    name: str
    api_key: str
    api_secret: str
    auth_mode: str
    webhook_secret: str


def parse_allowed_ips(text: str) -> list[str]:
    """Validate an allow-list (`*`, addresses, CIDR networks, comma separated)."""
    items = [p.strip() for p in text.split(",") if p.strip()] or ["*"]
    for item in items:
        if item != "*":
            ipaddress.ip_network(item, strict=False)  # raises ValueError with the bad item
    return items


def ip_allowed(allowed: str, ip: str) -> bool:
    items = [p.strip() for p in allowed.split(",") if p.strip()]
    if not items or "*" in items:
        return True
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in ipaddress.ip_network(item, strict=False) for item in items)


def create_project(
    session: Session,
    *,
    name: str,
    auth_mode: str = "signature",
    allowed_ips: str = "*",
    max_running_tasks: int = 0,
) -> NewCredentials:
    if auth_mode not in AUTH_MODES:
        raise ValueError(f"auth mode must be one of {', '.join(AUTH_MODES)}")
    ips = ",".join(parse_allowed_ips(allowed_ips))
    project = Project(
        name=name,
        api_key=random_token(32),
        api_secret=random_token(32),
        auth_mode=auth_mode,
        allowed_ips=ips,
        max_running_tasks=max(0, max_running_tasks),
        webhook_secret=new_webhook_secret(),
        active=True,
        created_at=time.time(),
    )
    session.add(project)
    session.flush()
    return NewCredentials(
        project.id, name, project.api_key, project.api_secret, auth_mode, project.webhook_secret
    )


def find_by_key(session: Session, api_key: str) -> Project | None:
    return session.scalar(select(Project).where(Project.api_key == api_key, Project.active))


class ProjectCache:
    """Active projects by API key, kept `ttl` seconds: authentication is on every request,
    and a project changes rarely. A revoked key stops working within `ttl`; an unknown key
    is never cached, so a new key works at once."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, ProjectInfo]] = {}

    def peek(self, api_key: str) -> ProjectInfo | None:
        """The cached project if still fresh; no database access."""
        hit = self._entries.get(api_key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def get(self, session_factory: Callable[[], Session], api_key: str) -> ProjectInfo | None:
        now = time.monotonic()
        hit = self._entries.get(api_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        with session_factory() as session:
            project = find_by_key(session, api_key)
            info = ProjectInfo.of(project) if project is not None else None
        if info is None:
            self._entries.pop(api_key, None)
        else:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[api_key] = (now + self.ttl, info)
        return info


def remember_request(session: Session, project_id: int, fingerprint: str) -> bool:
    """Record a state-changing request; false when this project already sent exactly this
    one (a replay). One INSERT in the caller's transaction, inside a savepoint so a replay
    does not spoil it."""
    try:
        with session.begin_nested():
            session.add(
                RequestNonce(project_id=project_id, fingerprint=fingerprint, seen_at=time.time())
            )
    except IntegrityError:
        return False
    return True


def forget_requests_before(session: Session, cutoff: float) -> int:
    result = session.execute(delete(RequestNonce).where(RequestNonce.seen_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]

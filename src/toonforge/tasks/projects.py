"""Projects: API key and secret, authentication mode, IP allow-list, task limit."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from toonforge.callbacks.signing import new_webhook_secret
from toonforge.tasks.models import Nonce, Project
from toonforge.tasks.tokens import random_token

AUTH_MODES = ("signature", "key")


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


def remember_nonce(session: Session, project_id: int, nonce: str, window: int) -> bool:
    """Record a nonce; false when this key already used it inside the window (a replay).
    Runs in its own savepoint so a replay does not spoil the caller's transaction."""
    cutoff = time.time() - window
    session.execute(delete(Nonce).where(Nonce.project_id == project_id, Nonce.seen_at < cutoff))
    try:
        with session.begin_nested():
            session.add(Nonce(project_id=project_id, nonce=nonce, seen_at=time.time()))
    except IntegrityError:
        return False
    return True

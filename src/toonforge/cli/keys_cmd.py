"""`toonforge keys create | list | revoke | rotate`.

A project is named on the command line by its id, its name (when no other project has
it), its whole API key, or the start of its key as `keys list` shows it."""

from __future__ import annotations

import argparse
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from toonforge.cli.common import settings_from_args
from toonforge.services import build_services
from toonforge.tasks.models import Project
from toonforge.tasks.projects import NewCredentials, create_project
from toonforge.tasks.tokens import random_token

# How much of a key `keys list` shows: enough to name the project, too little to use it.
KEY_PREFIX_CHARS = 8


def print_credentials(creds: NewCredentials, *, as_json: bool = False) -> None:
    """Shown once, on the terminal only: nothing here goes through logging."""
    if as_json:
        print(
            json.dumps(
                {
                    "projectid": creds.project_id,
                    "name": creds.name,
                    "apikey": creds.api_key,
                    "apisecret": creds.api_secret,
                    "mode": creds.auth_mode,
                    "webhooksecret": creds.webhook_secret,
                }
            )
        )
        return
    print(f"project {creds.project_id} ({creds.name}), authentication: {creds.auth_mode}")
    print(f"  API key:        {creds.api_key}")
    print(f"  API secret:     {creds.api_secret}")
    print(f"  webhook secret: {creds.webhook_secret}  (verifies callback signatures)")
    print("  These are shown once; store them now.")


def create(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    services = build_services(settings)
    max_running = (
        args.max_running if args.max_running is not None else settings.default_max_running_tasks
    )
    with services.sessions() as session:
        creds = create_project(
            session,
            name=args.name,
            auth_mode=args.mode,
            allowed_ips=args.allow_ip,
            max_running_tasks=max_running,
        )
        session.commit()
    print_credentials(creds, as_json=args.json)
    return 0


def list_keys(args: argparse.Namespace) -> int:
    services = build_services(settings_from_args(args))
    with services.sessions() as session:
        projects = session.scalars(select(Project).order_by(Project.id)).all()
        if not projects:
            print("no projects yet: `toonforge keys create` makes one")
            return 0
        print("id\tname\tkey\tmode\tstate\tips\tmax-running")
        for p in projects:
            state = "active" if p.active else "revoked"
            print(
                f"{p.id}\t{p.name}\t{p.api_key[:KEY_PREFIX_CHARS]}…\t{p.auth_mode}\t{state}"
                f"\t{p.allowed_ips}\t{p.max_running_tasks or 'unlimited'}"
            )
    return 0


class NoSuchProject(Exception):
    pass


def find_project(session: Session, ref: str) -> Project:
    """The project `ref` names: id, whole key, unique name, or unique start of its key."""
    ref = ref.strip().rstrip("…")
    if not ref:
        raise NoSuchProject("name a project by its id, name or API key")
    project = session.scalar(select(Project).where(Project.api_key == ref))
    if project is None and ref.isdigit():
        project = session.get(Project, int(ref))
    if project is not None:
        return project
    for column, what in ((Project.name, "name"), (Project.api_key, "key")):
        where = column == ref if what == "name" else column.startswith(ref, autoescape=True)
        if what == "key" and len(ref) < 4:
            continue
        found = session.scalars(select(Project).where(where).limit(2)).all()
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise NoSuchProject(f"several projects have that {what}: use the project's id")
    raise NoSuchProject(f"no project has the id, name or API key {ref!r}")


def revoke(args: argparse.Namespace) -> int:
    services = build_services(settings_from_args(args))
    with services.sessions() as session:
        try:
            project = find_project(session, args.project)
        except NoSuchProject as exc:
            print(f"toonforge: {exc}")
            return 1
        project.active = False
        session.commit()
        print(f"project {project.id} ({project.name}): key revoked")
    return 0


def rotate(args: argparse.Namespace) -> int:
    """A new API secret (the key stays); printed once. Servers drop the old one within
    TOONFORGE_AUTH_CACHE_SECONDS (2 s by default)."""
    services = build_services(settings_from_args(args))
    with services.sessions() as session:
        try:
            project = find_project(session, args.project)
        except NoSuchProject as exc:
            print(f"toonforge: {exc}")
            return 1
        project.api_secret = random_token(32)
        session.commit()
        creds = NewCredentials(
            project.id,
            project.name,
            project.api_key,
            project.api_secret,
            project.auth_mode,
            project.webhook_secret,
        )
    if args.json:
        print_credentials(creds, as_json=True)
    else:
        print(f"project {creds.project_id} ({creds.name}): new API secret")
        print(f"  API key:        {creds.api_key}")
        print(f"  API secret:     {creds.api_secret}")
        print("  The secret is shown once; store it now. The old one stops working.")
    return 0

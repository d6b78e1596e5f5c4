"""`toonforge keys create | list | revoke`."""

from __future__ import annotations

import argparse
import json

from sqlalchemy import select

from toonforge.cli.common import settings_from_args
from toonforge.services import build_services
from toonforge.tasks.models import Project
from toonforge.tasks.projects import NewCredentials, create_project


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
        for p in projects:
            state = "active" if p.active else "revoked"
            print(
                f"{p.id}\t{p.name}\t{p.api_key[:6]}…\t{p.auth_mode}\t{state}"
                f"\tips={p.allowed_ips}\tmax-running={p.max_running_tasks or 'unlimited'}"
            )
        if not projects:
            print("no projects yet: `toonforge keys create` makes one")
    return 0


def revoke(args: argparse.Namespace) -> int:
    services = build_services(settings_from_args(args))
    with services.sessions() as session:
        project = session.scalar(select(Project).where(Project.api_key == args.api_key))
        if project is None:
            print("toonforge: no project has that API key")
            return 1
        project.active = False
        session.commit()
        print(f"project {project.id} ({project.name}): key revoked")
    return 0

"""`toonforge models private add | list | remove`: a project's own SD 1.5 base checkpoints.

    toonforge models private add --project KEY_OR_ID --name my-base --file my-base.safetensors
    toonforge models private list --project KEY_OR_ID
    toonforge models private remove --project KEY_OR_ID ID_OR_NAME

The id printed by `add` is what AnimateDiff's `selectedModelPrivate` takes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from toonforge.cli.common import settings_from_args
from toonforge.services import build_services
from toonforge.tasks.models import Project
from toonforge.tasks.private_models import (
    PrivateModelError,
    add_private_model,
    discard_file,
    list_private_models,
    record,
    remove_private_model,
)


def register(models_sub: argparse._SubParsersAction, common: object) -> None:  # type: ignore[type-arg]
    """Add `private add|list|remove` under `toonforge models`."""
    private = models_sub.add_parser("private", help="a project's own base checkpoints")
    sub = private.add_subparsers(dest="private_command", required=True)

    def project_arg(p: argparse.ArgumentParser) -> None:
        common(p)  # type: ignore[operator]
        p.add_argument("--project", required=True, help="the project's API key or its id")
        p.add_argument("--json", action="store_true", help="print JSON")

    add = sub.add_parser("add", help="register a single-file SD 1.5 .safetensors checkpoint")
    project_arg(add)
    add.add_argument("--name", required=True, help="the model's name in this project")
    add.add_argument(
        "--file", required=True, type=Path, help="the checkpoint: one SD 1.5 .safetensors file"
    )
    add.set_defaults(func=add_cmd)
    listing = sub.add_parser("list", help="list a project's private models")
    project_arg(listing)
    listing.set_defaults(func=list_cmd)
    remove = sub.add_parser("remove", help="remove a private model (by id or name)")
    project_arg(remove)
    remove.add_argument("model", help="the model's id or name")
    remove.set_defaults(func=remove_cmd)


def _project(session: Session, value: str) -> Project:
    project = session.scalar(select(Project).where(Project.api_key == value))
    if project is None and value.isdigit():
        project = session.get(Project, int(value))
    if project is None:
        raise SystemExit("toonforge: no project has that API key or id")
    return project


def _show(rows: list[dict[str, str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows))
        return
    for r in rows:
        print(f"{r['id']}\t{r['name']}\t{r['filename']}\t{r['size']} bytes\tsha256={r['sha256']}")


def add_cmd(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    services = build_services(settings)
    if not args.file.is_file():
        raise SystemExit(f"toonforge: no such file: {args.file}")
    with services.sessions() as session:
        project = _project(session, args.project)
        try:
            model = add_private_model(
                session,
                settings,
                services.storage,
                project_id=project.id,
                name=args.name,
                source=args.file,
            )
            try:
                session.commit()
            except BaseException:
                discard_file(settings, services.storage, model.id, model.storage_key)
                raise
        except PrivateModelError as exc:
            session.rollback()
            raise SystemExit(f"toonforge: {exc}") from exc
        _show([record(model)], args.json)
    return 0


def list_cmd(args: argparse.Namespace) -> int:
    services = build_services(settings_from_args(args))
    with services.sessions() as session:
        project = _project(session, args.project)
        rows = [record(m) for m in list_private_models(session, project.id)]
    _show(rows, args.json)
    if not rows and not args.json:
        print("no private models yet: `toonforge models private add` registers one")
    return 0


def remove_cmd(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    services = build_services(settings)
    with services.sessions() as session:
        project = _project(session, args.project)
        model = remove_private_model(session, project.id, args.model)
        if model is None:
            raise SystemExit("toonforge: private model not found")
        row, key = record(model), model.storage_key
        session.commit()
    discard_file(settings, services.storage, int(row["id"]), key)
    _show([row], args.json)
    return 0

"""Options shared by the commands that call a server as a client (`run`, `tasks`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from toonforge.cli.credentials import CredentialsError, resolve
from toonforge.client import Client, Task


def add_connection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        help="a profile of the credentials file (~/.config/toonforge/credentials.toml); "
        "default: TOONFORGE_API_KEY / TOONFORGE_API_SECRET, else the [default] profile",
    )
    p.add_argument(
        "--url",
        help="the server's API address, ending with /v1 "
        "(TOONFORGE_URL, default http://127.0.0.1:8000/v1)",
    )
    p.add_argument("--json", action="store_true", help="print the task(s) as JSON")


def connect(args: argparse.Namespace) -> Client:
    try:
        creds = resolve(args.profile, args.url)
    except CredentialsError as exc:
        raise SystemExit(f"toonforge: error: {exc}") from exc
    return Client(creds.url, creds.api_key, creds.api_secret)


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def describe(task: Task) -> str:
    line = f"task {task.id}  {task.tool}  {task.status}"
    if task.done and task.status != "task_cancel":
        line += f"  pexit={task.pexit}  {task.elapsedseconds:g}s"
    if task.outputs:
        line += f"  {len(task.outputs)} output(s)"
    return line


def warn(text: str) -> None:
    print(text, file=sys.stderr)

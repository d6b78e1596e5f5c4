"""`toonforge tasks list | show | kill | cancel`: a project's tasks on a server."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from toonforge.cli.client_args import add_connection, connect, describe, print_json, warn
from toonforge.client import ApiError, Client, Task
from toonforge.tasks import lifecycle as lc

# The lifecycle module is plain constants: no server code comes with it.
STATUSES = lc.ALL


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tasks = sub.add_parser("tasks", help="list, show, kill or cancel a project's tasks")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)

    listing = tasks_sub.add_parser("list", help="the project's tasks, newest first")
    listing.add_argument("--status", choices=STATUSES, help="only tasks in this status")
    listing.add_argument("--model", help="only tasks of tools whose OWNER/SLUG contains this")
    listing.add_argument("--limit", type=int, default=20, help="how many tasks (1-100, default 20)")
    listing.add_argument("--start", type=int, default=0, help="skip this many (default 0)")
    add_connection(listing)
    listing.set_defaults(func=list_tasks)

    for name, helptext, action in (
        ("show", "a task's record, outputs included", Client.detail),
        ("kill", "stop a running task (it ends in task_cancel)", Client.kill),
        ("cancel", "remove a task that is still queued", Client.cancel),
    ):
        p = tasks_sub.add_parser(name, help=helptext)
        p.add_argument("task", metavar="TASK", help="the task's id or socket access token")
        add_connection(p)
        p.set_defaults(func=_one(action))


def list_tasks(args: argparse.Namespace) -> int:
    with connect(args) as client:
        try:
            page = client.list_tasks(
                status=args.status, model=args.model, start=args.start, limit=args.limit
            )
        except ApiError as exc:
            warn(f"toonforge tasks list: error: {exc}")
            return 1
    if args.json:
        print_json({"total": page.total, "tasklist": [t.raw for t in page.tasks]})
        return 0
    for task in page.tasks:
        print(describe(task))
    shown = f"{args.start + 1}-{args.start + len(page.tasks)}" if page.tasks else "none"
    print(f"{page.total} task(s), showing {shown}")
    return 0


def _one(action: Callable[[Client, str], Task]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        with connect(args) as client:
            try:
                task = action(client, args.task)
            except ApiError as exc:
                warn(f"toonforge tasks {args.tasks_command}: error: {exc}")
                return 1
        if args.json:
            print_json(task.raw)
        else:
            print(describe(task))
            if args.tasks_command == "show":
                for output in task.outputs:
                    print(f"  {output.name}  {output.size} bytes  {output.url}")
                if task.debugerror:
                    print(f"  error: {task.debugerror}")
        return 0

    return command

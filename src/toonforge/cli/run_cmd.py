"""`toonforge run OWNER/SLUG NAME=VALUE ... --out DIR`: run a tool on a server, follow it
on a progress bar, save its outputs. Ctrl-C stops the task on the server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from toonforge.cli.client_args import add_connection, connect, describe, print_json, warn
from toonforge.client import ApiError, Client, Event, Task, TaskTimeout

EPILOG = """\
inputs are NAME=VALUE (sent as text, which the API reads as numbers where it expects
numbers) or NAME:=JSON for a typed value (samples:=2, options:='["a","b"]').

example:
  toonforge run 'futurist/CartoonMix v1.0' prompt="a cartoon cat" samples=2 --out cats
"""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run a tool on a server and save its outputs",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("tool", metavar="OWNER/SLUG", help="the tool, e.g. 'futurist/CartoonMix v1.0'")
    p.add_argument("inputs", metavar="NAME=VALUE", nargs="*", help="the tool's inputs")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        help="folder for the output files (made if missing; default: the current folder)",
    )
    p.add_argument(
        "--no-wait", action="store_true", help="queue the task and print its id, do not wait"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait for the task to end (default 600; the task is then killed)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_connection(p)
    p.set_defaults(func=run)


def parse_inputs(items: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.rstrip(":"):
            raise SystemExit(f"toonforge run: error: input {item!r} is not NAME=VALUE")
        if name.endswith(":"):
            try:
                inputs[name[:-1]] = json.loads(value)
            except ValueError as exc:
                raise SystemExit(
                    f"toonforge run: error: input {name[:-1]!r}: {value!r} is not JSON"
                ) from exc
        else:
            inputs[name] = value
    return inputs


def run(args: argparse.Namespace) -> int:
    inputs = parse_inputs(args.inputs)
    with connect(args) as client:
        try:
            task = client.run(args.tool, inputs, wait=False)
        except (ApiError, ValueError) as exc:
            warn(f"toonforge run: error: {exc}")
            return 1
        if args.no_wait:
            if args.json:
                print_json(task.raw)
            else:
                print(describe(task))
            return 0
        try:
            task = follow(client, task, args)
        except KeyboardInterrupt:
            warn(f"interrupted: {stop(client, task)}")
            return 130
        except TaskTimeout as exc:
            warn(f"toonforge run: task {task.id} did not end in {args.timeout:g}s")
            warn(stop(client, exc.task))
            return 1
        paths = client.download(task, args.out) if task.succeeded else []
    if args.json:
        print_json({**task.raw, "saved": [str(p) for p in paths]})
    else:
        print(describe(task))
        for path in paths:
            print(path)
    if not task.succeeded:
        warn(f"toonforge run: task {task.id} failed: {task.debugerror or task.status}")
        return 1
    return 0


def follow(client: Client, task: Task, args: argparse.Namespace) -> Task:
    """Wait for the task's end, with a progress bar fed by its socket events."""
    if args.quiet or args.json:
        return client.wait(task, timeout=args.timeout)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    bar = progress.add_task(f"task {task.id}: queued", total=None)

    def on_event(event: Event) -> None:
        step = event.progress
        if step is not None:
            progress.update(bar, completed=step[0], total=step[1], description=f"task {task.id}")
        elif event.type != "task_output":
            label = event.type.removeprefix("task_").replace("_", " ")
            progress.update(bar, description=f"task {task.id}: {label}")

    with progress:
        return client.wait(task, timeout=args.timeout, on_event=on_event)


def stop(client: Client, task: Task) -> str:
    """Cancel a queued task, kill a running one; what happened, in words."""
    try:
        current = client.detail(task)
        if current.done:
            return f"task {task.id} had already ended ({current.status})"
        if current.status == "task_queue":
            try:
                return f"task {client.cancel(task).id} cancelled"
            except ApiError:
                pass  # a worker took it meanwhile: kill it
        ended = client.kill(task)
        return f"task {ended.id} killed ({ended.status})"
    except ApiError as exc:
        return f"task {task.id} could not be stopped: {exc}"

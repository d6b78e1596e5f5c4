"""`toonforge serve | worker | keys | models | db | prompt | run | tasks`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from toonforge.cli import (
    keys_cmd,
    models_cmd,
    plan_cmd,
    private_cmd,
    prompt_cmd,
    run_cmd,
    serve_cmd,
    tasks_cmd,
)
from toonforge.ops.logging import configure_logging
from toonforge.settings import load_settings

# Loggers whose INFO lines are noise on a terminal: migrations applied (alembic) and every
# HTTP request the client commands make (httpx).
QUIET_LOGGERS = ("alembic", "httpx", "httpcore")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data folder (TOONFORGE_DATA_DIR)")
    p.add_argument("--database-url", help="SQLAlchemy URL (TOONFORGE_DATABASE_URL)")
    p.add_argument(
        "--tiny",
        action="store_true",
        default=None,
        help="offline mode: run every tool on tiny stand-in weights (TOONFORGE_TINY)",
    )


def _workers_arg(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, not {value!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toonforge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server and its worker(s)")
    _common(serve)
    serve.add_argument("--host", help="bind address (TOONFORGE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (TOONFORGE_PORT, default 8000)")
    serve.add_argument(
        "--workers",
        type=_workers_arg,
        help="worker processes to start (TOONFORGE_WORKERS, default 1); `auto`: one per "
        "visible GPU, or per entry of TOONFORGE_DEVICES",
    )
    serve.set_defaults(func=serve_cmd.serve)

    worker = sub.add_parser("worker", help="run a worker process (claims and runs tasks)")
    _common(worker)
    worker.add_argument(
        "--device", help="the device it runs on: cpu, cuda, cuda:N, mps (TOONFORGE_DEVICE)"
    )
    worker.set_defaults(func=serve_cmd.worker)

    keys = sub.add_parser("keys", help="manage projects and their API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a project; prints key and secret once")
    _common(create)
    create.add_argument("--name", default="default", help="the project's name (default: default)")
    create.add_argument(
        "--mode",
        choices=["signature", "key"],
        default="signature",
        help="signature: requests carry x-nonce and x-signature (default); key: x-api-key alone",
    )
    create.add_argument("--allow-ip", default="*", help="comma separated IPs/CIDRs, * for all")
    create.add_argument(
        "--max-running", type=int, default=None, help="limit on unfinished tasks (0 = unlimited)"
    )
    create.add_argument("--json", action="store_true", help="print the credentials as JSON")
    create.set_defaults(func=keys_cmd.create)
    listing = keys_sub.add_parser(
        "list", help="list projects: id, name, the start of the key (never the secret)"
    )
    _common(listing)
    listing.set_defaults(func=keys_cmd.list_keys)
    project_help = "the project's id, name, API key, or the start of its key as `keys list` shows"
    revoke = keys_sub.add_parser("revoke", help="revoke a project's key")
    _common(revoke)
    revoke.add_argument("project", metavar="PROJECT", help=project_help)
    revoke.set_defaults(func=keys_cmd.revoke)
    rotate = keys_sub.add_parser(
        "rotate", help="give a project a new API secret (printed once; the old one stops)"
    )
    _common(rotate)
    rotate.add_argument("project", metavar="PROJECT", help=project_help)
    rotate.add_argument("--json", action="store_true", help="print the credentials as JSON")
    rotate.set_defaults(func=keys_cmd.rotate)

    models = sub.add_parser("models", help="weights: what is present, missing, and pulling")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    status = models_sub.add_parser("status", help="show weights present and missing per tool")
    _common(status)
    status.add_argument("tool", nargs="?", help="OWNER/SLUG (default: every tool)")
    status.set_defaults(func=models_cmd.status)
    pull = models_sub.add_parser("pull", help="download a tool's weights")
    _common(pull)
    pull.add_argument("tool", help="OWNER/SLUG, e.g. 'futurist/CartoonMix v1.0'")
    pull.set_defaults(func=models_cmd.pull)
    private_cmd.register(models_sub, _common)
    plan_cmd.register(models_sub, _common)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations")
    _common(up)
    up.set_defaults(func=serve_cmd.db_upgrade)

    prompt_cmd.add_parser(sub)
    run_cmd.add_parser(sub)
    tasks_cmd.add_parser(sub)
    return parser


def _log_format() -> str:
    """TOONFORGE_LOG_FORMAT, or text while the settings cannot be read (the command then
    reports what is wrong with them)."""
    try:
        return load_settings().log_format
    except ValueError:
        return "text"


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging(_log_format())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # a clear line for the operator; the traceback is in --debug logs
        logging.getLogger("toonforge").debug("command failed", exc_info=True)
        print(f"toonforge: error: {exc}", file=sys.stderr)
        return 1

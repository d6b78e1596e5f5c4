"""`toonforge prompt explain`: how a prompt is read, step by step (AUTOMATIC1111 syntax)."""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_STEPS = 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `prompt explain` on the top-level subcommands."""
    prompt = sub.add_parser("prompt", help="debug prompts written in AUTOMATIC1111's syntax")
    prompt_sub = prompt.add_subparsers(dest="prompt_command", required=True)
    explain_p = prompt_sub.add_parser(
        "explain",
        help="print the schedule and the weight of every fragment of a prompt",
        description=(
            "Shows how a prompt is read: its AND parts and their weights, which text is in "
            "force up to which step ([from:to:when], [a|b]), and the weight of every fragment "
            "((word), (word:1.3), [word], BREAK)."
        ),
    )
    explain_p.add_argument("text", metavar="PROMPT", help="the prompt; '-' reads it from stdin")
    explain_p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"sampling steps (default {DEFAULT_STEPS})",
    )
    explain_p.add_argument(
        "--negative",
        action="store_true",
        help="read it as a negative prompt (no AND composition, as in AUTOMATIC1111)",
    )
    explain_p.add_argument("--json", action="store_true", help="print the plan as JSON")
    explain_p.set_defaults(func=explain)


def explain(args: argparse.Namespace) -> int:
    from toonforge.prompts import PromptError, explain_text, plan

    if args.steps < 1:
        print(
            f"toonforge prompt explain: error: --steps must be at least 1, got {args.steps}",
            file=sys.stderr,
        )
        return 2
    text = sys.stdin.read().rstrip("\n") if args.text == "-" else args.text
    try:
        result = plan(text, args.steps, negative=args.negative)
    except PromptError as exc:
        print(f"toonforge prompt explain: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(explain_text(result))
    return 0

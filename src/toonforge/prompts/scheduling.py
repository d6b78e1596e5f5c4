"""Prompt editing `[from:to:when]` and alternation `[a|b]`: which text is in force at which step.

Semantics of AUTOMATIC1111's `get_learned_conditioning_prompt_schedules` (current scheduling,
no hires pass), re-implemented here:

- The prompt is parsed with a small Earley grammar (lark). A prompt the grammar rejects (for
  example a `|` outside square brackets) is not an error: it is used literally, unchanged, for
  every step.
- `when` containing a dot is a fraction of the steps (`0.5` of 20 steps is 10), otherwise a
  step number; it is truncated to an integer and capped at `steps`. `[from:to:when]` shows
  `from` for steps <= when and `to` after; `[to:when]` adds `to` after step `when`;
  `[from::when]` removes `from` after step `when`.
- `[a|b|c]` picks a different option each step: option `(step - 1) % n` at 1-based `step`;
  an empty option means "nothing".
- Nothing else is touched: `(word:1.2)`, `[word]` and their brackets stay in the text, to be
  read by `parse_attention` afterwards.

The result is a list of `(end_step, text)`: one entry per step at which some schedule
changes (every step when the prompt alternates), ascending, the last at `steps`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import lark

_GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
           | "(" prompt ":" prompt ")"
           | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""


@cache
def _parser() -> lark.Lark:
    return lark.Lark(_GRAMMAR, start="start")


def parse_tree(prompt: str) -> lark.Tree | None:
    """The schedule parse tree of `prompt`, or None when the grammar rejects it (A1111 then
    uses the prompt literally)."""
    try:
        return _parser().parse(prompt)
    except lark.exceptions.LarkError:
        return None


def _when(number: str, steps: int) -> int:
    """The last step of the `from` text for a `when` as written."""
    value = float(number)
    if "." in number:
        value = value * steps
    return min(steps, int(value))


def _change_steps(tree: lark.Tree, steps: int) -> list[int]:
    found = {steps}
    for node in tree.iter_subtrees():
        if node.data == "scheduled":
            when = _when(str(node.children[-2]), steps)
            if when >= 1:
                found.add(when)
        elif node.data == "alternate":
            found.update(range(1, steps + 1))
    return sorted(found)


def _text_at(node: Any, step: int, steps: int) -> str:
    if node is None:
        return ""
    if isinstance(node, lark.Token):
        return str(node)
    kind = node.data
    if kind == "plain":
        return str(node.children[0])
    if kind == "scheduled":
        before, after, _, number, _ = node.children
        if step <= _when(str(number), steps):
            return _text_at(before, step, steps)
        return _text_at(after, step, steps)
    if kind == "alternate":
        options = node.children
        return _text_at(options[(step - 1) % len(options)], step, steps)
    return "".join(_text_at(child, step, steps) for child in node.children)


def schedule_checked(prompt: str, steps: int) -> tuple[list[tuple[int, str]], bool]:
    """`schedule(prompt, steps)` and whether the grammar accepted the prompt (False: the
    prompt is used literally)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    tree = parse_tree(prompt)
    if tree is None:
        return [(steps, prompt)], False
    return [(end, _text_at(tree, end, steps)) for end in _change_steps(tree, steps)], True


def schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """`[(end_step, text), ...]`: `text` is in force for the (1-based) steps up to and
    including `end_step` that the previous entry does not cover."""
    return schedule_checked(prompt, steps)[0]

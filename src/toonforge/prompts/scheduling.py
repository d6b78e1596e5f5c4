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

Earley parsing takes time cubic in the length: a prompt of 500 characters full of brackets
takes seconds in one piece, minutes at 1000. A prompt with up to 48 bracket and colon
characters (nearly all real prompts) is parsed whole, exactly as A1111 does; a longer one is
cut, between bracket groups, into pieces parsed one by one and put back together. That gives
the same schedule (checked against A1111's code on thousands of random prompts) except in
one corner: A1111's parser sometimes reads a bracket group literally when two or more loose
brackets (ones that match nothing) follow it, and across a cut that quirk may not show. A
single bracket group with more than 200 brackets and colons is refused with a PromptError.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import lark

from toonforge.prompts.attention import PromptError

# A1111's grammar (an Earley parser: slow on long inputs, hence `_pieces`).
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
    if not math.isfinite(value):  # "1e400": past every step
        return steps
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
    if isinstance(node, str):  # a lark.Token, or a piece used as written
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


_OPENERS = {"[": "]", "(": ")"}
_STRUCTURAL = set("[]():")
# A prompt with at most this many bracket and colon characters is parsed whole, exactly as
# A1111 does; a longer one in pieces of about PIECE_SIZE of them (see `_pieces`).
WHOLE_PARSE_LIMIT = 48
PIECE_SIZE = 12
# Earley parsing is cubic: one bracket group with more structure than this is refused.
GROUP_LIMIT = 200


def _scan(prompt: str) -> tuple[list[bool], list[tuple[int, int]], bool] | None:
    """Which characters are structural (an unescaped `[]():`), the bracket pairs that could
    be constructs (a pair of the same kind with only such pairs between them: inside a
    construct every bracket belongs to a construct), and whether there is an unescaped `|`.
    None when the prompt cannot parse because of a backslash that escapes nothing."""
    bar = False
    structural = [False] * len(prompt)
    pairs: list[tuple[int, int]] = []
    stack: list[int] = []
    i = 0
    while i < len(prompt):
        char = prompt[i]
        if char == "\\":
            if i + 1 == len(prompt) or prompt[i + 1] == "\n":
                return None  # plain text's `\\.` cannot match: the grammar fails
            i += 2
            continue
        bar = bar or char == "|"
        if char in _STRUCTURAL:
            structural[i] = True
            if char in _OPENERS:
                stack.append(i)
            elif char != ":":
                if stack and _OPENERS[prompt[stack[-1]]] == char:
                    pairs.append((stack.pop(), i))
                else:
                    stack.clear()  # no open bracket can contain this one in a construct
        i += 1
    return structural, pairs, bar


def _pieces(prompt: str, size: int) -> list[str] | None:
    """`prompt` cut into pieces whose schedules concatenate to the prompt's (None: the prompt
    does not parse). Cuts fall outside every possible construct and never between two
    structural characters, so neither a construct nor one of the top level's runs of loose
    brackets and colons (which the grammar reads as one token) is cut unless the piece gets
    long; a piece is cut once it holds `size` structural characters."""
    scanned = _scan(prompt)
    if scanned is None:
        return None
    structural, pairs, _ = scanned
    inside = [False] * (len(prompt) + 1)  # inside[i]: position i is within a pair
    opens, closes = set(), set()  # the outermost pairs' brackets
    for first, last in sorted(pairs):
        if inside[first]:
            continue
        opens.add(first)
        closes.add(last)
        for k in range(first + 1, last + 1):
            inside[k] = True
    escaped = [False] * (len(prompt) + 1)  # escaped[i]: position i splits an escape
    i = 0
    while i < len(prompt):
        if prompt[i] == "\\":
            escaped[i + 1] = True
            i += 2
        else:
            i += 1
    pieces: list[str] = []
    start = count = 0
    for i in range(1, len(prompt)):
        count += structural[i - 1]
        if inside[i] or escaped[i] or count < size:
            continue
        # Between two structural characters only when the piece is getting long: A1111's
        # parser can read a group literally when loose brackets follow it (a quirk of its
        # Earley ambiguity resolution), which separate parsing would not reproduce.
        between_groups = i - 1 in closes and i in opens
        if (
            not (structural[i - 1] and structural[i])
            or (between_groups and count >= 4 * size)
            or count >= 8 * size
        ):
            pieces.append(prompt[start:i])
            start, count = i, 0
    pieces.append(prompt[start:])
    return pieces


def _literal_piece(piece: str) -> bool | None:
    """True when the piece holds no `[...]` that could be prompt editing or alternation, so
    it parses to itself; None when it cannot parse at all; False when it needs the parser."""
    scanned = _scan(piece)
    if scanned is None:
        return None
    _, pairs, bar = scanned
    if any(piece[first] == "[" for first, _ in pairs):
        return False
    return None if bar else True  # '|' is legal only directly inside [...]


def schedule_checked(
    prompt: str, steps: int, *, piece_size: int = PIECE_SIZE
) -> tuple[list[tuple[int, str]], bool]:
    """`schedule(prompt, steps)` and whether the grammar accepted the prompt (False: the
    prompt is used literally)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    literal = [(steps, prompt)]
    if sum(prompt.count(c) for c in _STRUCTURAL) <= WHOLE_PARSE_LIMIT:
        pieces: list[str] | None = [prompt]
    else:
        pieces = _pieces(prompt, piece_size)
    if pieces is None:
        return literal, False
    parts: list[str | lark.Tree] = []
    for piece in pieces:
        plain = _literal_piece(piece)
        if plain is None:
            return literal, False
        if plain:
            parts.append(piece)
            continue
        if sum(piece.count(c) for c in _STRUCTURAL) > GROUP_LIMIT:
            raise PromptError(
                f"the prompt has a bracket group with more than {GROUP_LIMIT} brackets and "
                "colons in one piece; split it up (its parsing time grows with the cube of "
                "its size)"
            )
        tree = parse_tree(piece)
        if tree is None:
            return literal, False
        parts.append(tree)
    trees = [part for part in parts if isinstance(part, lark.Tree)]
    if not trees:
        return literal, True
    ends = sorted(set().union(*(_change_steps(tree, steps) for tree in trees)))
    return [(end, "".join(_text_at(part, end, steps) for part in parts)) for end in ends], True


def schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """`[(end_step, text), ...]`: `text` is in force for the (1-based) steps up to and
    including `end_step` that the previous entry does not cover."""
    return schedule_checked(prompt, steps)[0]

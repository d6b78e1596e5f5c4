"""Emphasis: `(word)`, `(word:1.3)`, `[word]`, escapes and `BREAK` -> weighted fragments.

Semantics of AUTOMATIC1111's `parse_prompt_attention`, re-implemented here:

- `(text)` multiplies the weight of `text` by 1.1, `[text]` by 1/1.1, `(text:w)` by `w`;
  brackets nest and their factors multiply (`((a))` is 1.21, `((a:1.2))` is 1.32).
- `\\(`, `\\)`, `\\[`, `\\]` are the literal characters, `\\\\` a literal backslash; a lone
  backslash before anything else disappears.
- A bracket still open at the end of the prompt applies to the rest of the prompt; a closing
  bracket with nothing open, and `:` outside `(...:w)`, are ordinary text.
- The word `BREAK` (capitals, a whole word, outside brackets) becomes the fragment
  `("BREAK", -1.0)`: the text encoder starts a new 75-token chunk there. Inside brackets it
  gets the brackets' factor as well (`(a BREAK b)` gives `("BREAK", -1.1)`), and A1111 then
  encodes it as the word "BREAK", not as a chunk break: reproduced, and reported by
  `toonforge prompt explain`.
- Neighbouring fragments of the same weight are merged; an empty prompt is `[("", 1.0)]`.
"""

from __future__ import annotations

import re

ROUND_FACTOR = 1.1
SQUARE_FACTOR = 1 / 1.1
BREAK = "BREAK"
BREAK_WEIGHT = -1.0

# One token per match, tried in this order.
_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]?             # escape: \( \) \[ \] \\ ; or a lone backslash
    | [(\[]                   # opening bracket
    | :\s*([+-]?[.\d]+)\s*\)  # explicit weight closing a round bracket
    | [)\]]                   # closing bracket
    | [^\\()\[\]:]+           # a run of ordinary text
    | :                       # a colon that is not a weight
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


class PromptError(ValueError):
    """A prompt AUTOMATIC1111 cannot use either (it fails the generation on it)."""


def is_break(fragment: tuple[str, float]) -> bool:
    """True for the fragment that starts a new 75-token chunk (exactly as A1111 tests it)."""
    return fragment[0] == BREAK and fragment[1] == BREAK_WEIGHT


def parse_attention(text: str) -> list[tuple[str, float]]:
    """`text` -> `[(fragment, weight), ...]`, `BREAK` as `("BREAK", -1.0)`."""
    out: list[list] = []  # [fragment, weight], mutable while brackets close
    open_round: list[int] = []
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for item in out[start:]:
            item[1] *= factor

    for match in _TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            out.append([token[1:], 1.0])
        elif token == "(":
            open_round.append(len(out))
        elif token == "[":
            open_square.append(len(out))
        elif weight is not None and open_round:
            try:
                factor = float(weight)
            except ValueError:
                raise PromptError(
                    f"the weight {weight!r} at character {match.start() + 1} of the prompt "
                    "is not a number (write it like (word:1.2))"
                ) from None
            scale_from(open_round.pop(), factor)
        elif token == ")" and open_round:
            scale_from(open_round.pop(), ROUND_FACTOR)
        elif token == "]" and open_square:
            scale_from(open_square.pop(), SQUARE_FACTOR)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i:
                    out.append([BREAK, BREAK_WEIGHT])
                out.append([part, 1.0])

    for start in open_round:
        scale_from(start, ROUND_FACTOR)
    for start in open_square:
        scale_from(start, SQUARE_FACTOR)

    if not out:
        return [("", 1.0)]
    merged: list[list] = [out[0]]
    for item in out[1:]:
        if item[1] == merged[-1][1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return [(str(fragment), float(weight)) for fragment, weight in merged]

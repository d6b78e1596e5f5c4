"""`AND` composition: one prompt, several conditionings, each with its own weight.

Semantics of AUTOMATIC1111's `get_multicond_prompt_list`, re-implemented here: the prompt is
split on the word `AND` (capitals, a whole word, anywhere, even inside brackets); each part
may end with `:weight` (default 1.0), which is removed from its text together with the
whitespace before and after it. Leading whitespace of a part is kept, as A1111 keeps it.

During sampling every part is a separate conditioning and the guidance combines them:
`denoised = uncond + sum(weight_i * scale * (cond_i - uncond))`. The negative prompt is not
split: `AND` in it is ordinary text.
"""

from __future__ import annotations

import re

_AND = re.compile(r"\bAND\b")
_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def split_and(prompt: str) -> list[tuple[str, float]]:
    """`prompt` -> `[(part_text, weight), ...]`, at least one part."""
    parts: list[tuple[str, float]] = []
    for sub in _AND.split(prompt):
        match = _WEIGHT.search(sub)
        if match is None:  # cannot happen (every group is optional); kept for safety
            parts.append((sub, 1.0))
            continue
        text, weight = match.groups()
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts

"""Human-readable rendering of a `PromptPlan` (`toonforge prompt explain`)."""

from __future__ import annotations

import json

from toonforge.prompts.attention import BREAK, is_break
from toonforge.prompts.plan import PromptPlan


def format_weight(weight: float) -> str:
    return f"{weight:.4g}"


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _steps(start: int, end: int) -> str:
    return f"step {end}" if start == end else f"steps {start}-{end}"


def explain_text(p: PromptPlan) -> str:
    kind = "negative prompt (not split on AND)" if p.negative else "prompt"
    count = len(p.parts)
    lines = [
        f"{kind}: {_quoted(p.prompt)}",
        f"{p.steps} steps, {count} AND part{'s' if count != 1 else ''}"
        + ("" if p.is_static else "; the conditioning changes during sampling"),
    ]
    if not p.is_static:
        lines.append(
            "(steps as AUTOMATIC1111's schedule gives them; in brackets the sampler steps "
            "that use each text: A1111's sampler, like toonforge's, counts from 0, so a text "
            "lasts one step longer)"
        )
    for index, part in enumerate(p.parts, start=1):
        lines.append("")
        lines.append(
            f"part {index}/{count}  weight {format_weight(part.weight)}  {_quoted(part.text)}"
        )
        start = 1
        for seg, applied in zip(part.schedule, part.applied_steps(), strict=True):
            used = ""
            if len(part.schedule) > 1:
                used = f" [sampler {_steps(*applied)}]" if applied else " [never used]"
            lines.append(f"  {_steps(start, seg.end_step)}{used}: {_quoted(seg.text)}")
            for text, weight in seg.fragments:
                if is_break((text, weight)):
                    lines.append(f"    {'----':>7}  BREAK (a new 75-token chunk starts here)")
                elif text == BREAK and weight < 0:
                    lines.append(
                        f"    {format_weight(weight):>7}  BREAK (inside brackets: encoded as the "
                        "word 'BREAK', not a chunk break)"
                    )
                elif text:  # A1111 keeps empty fragments (around BREAK); they encode nothing
                    lines.append(f"    {format_weight(weight):>7}  {_quoted(text)}")
            start = seg.end_step + 1
    if p.notes:
        lines.append("")
        lines.extend(f"note: {note}" for note in p.notes)
    return "\n".join(lines)

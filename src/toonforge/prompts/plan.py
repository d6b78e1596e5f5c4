"""The whole prompt pipeline for one prompt: AND parts -> schedules -> weighted fragments."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from toonforge.prompts.attention import BREAK, is_break, parse_attention
from toonforge.prompts.composition import split_and
from toonforge.prompts.scheduling import schedule_checked

# A prompt-editing or alternation group still in a scheduled text: A1111 did not apply it.
_LEFTOVER = re.compile(r"(?<!\\)\[[^\[\]]*(?:\|[^\[\]]*|:\s*[-+]?(?:\d+\.?\d*|\.\d+)\s*)(?<!\\)\]")


@dataclass(frozen=True)
class ScheduledText:
    """`text` is in force from the step after the previous segment's end up to `end_step`."""

    end_step: int
    text: str
    fragments: list[tuple[str, float]]


@dataclass(frozen=True)
class PlanPart:
    """One `AND` part: its weight in the guidance and its schedule."""

    weight: float
    text: str
    schedule: list[ScheduledText]

    def at(self, step: int) -> ScheduledText:
        """The segment in force at `step`: the first one with `step <= end_step` (the last
        one for a step beyond the schedule)."""
        for segment in self.schedule:
            if step <= segment.end_step:
                return segment
        return self.schedule[-1]

    def applied_steps(self) -> list[tuple[int, int] | None]:
        """Per segment, the 1-based sampler steps `(first, last)` at which A1111's sampler
        (and toonforge's) uses it, or None when it never does: the sampler looks segments up
        with its 0-based step counter, so a text lasts one step longer than its `end_step`
        says, and a segment that starts at the last step is never used."""
        steps = self.schedule[-1].end_step
        used: list[tuple[int, int] | None] = [None] * len(self.schedule)
        for call in range(steps):
            index = next(i for i, seg in enumerate(self.schedule) if call <= seg.end_step)
            first = used[index][0] if used[index] else call + 1
            used[index] = (first, call + 1)
        return used

    def at_a1111_call(self, call: int) -> ScheduledText:
        """The segment AUTOMATIC1111's sampler uses at its denoiser call number `call`
        (counted from 0, `CFGDenoiser.step`): the first with `call <= end_step`, and the
        first segment of all when `call` is beyond the schedule (second-order samplers make
        more calls than steps)."""
        for segment in self.schedule:
            if call <= segment.end_step:
                return segment
        return self.schedule[0]


@dataclass(frozen=True)
class PromptPlan:
    prompt: str
    steps: int
    negative: bool
    parts: list[PlanPart]
    notes: list[str] = field(default_factory=list)

    def texts_at(self, step: int) -> list[tuple[str, float]]:
        """`(text, part weight)` of every AND part in force at 1-based `step` (the reading
        of A1111's doctests: `[a:b:5]` is `a` for steps 1-5). The lookup is "first segment
        with `step <= end_step`": given the sampler's 0-based step instead, it picks what
        A1111's sampler picks (`[a:b:5]` is `a` for sampler steps 0-5)."""
        return [(part.at(step).text, part.weight) for part in self.parts]

    def texts_at_a1111_call(self, call: int) -> list[tuple[str, float]]:
        """`(text, part weight)` of every AND part exactly as AUTOMATIC1111's sampler picks
        them at denoiser call `call` (0-based). A1111 compares its 0-based counter with the
        1-based `end_step`, so each text lasts one call longer than `texts_at` says (`[a:b:5]`
        is `a` for 6 of 10 steps, `[a|b]` gives a, a, b, a, b, ...). Use this to reproduce
        A1111's images."""
        return [(part.at_a1111_call(call).text, part.weight) for part in self.parts]

    def fragments_at(self, step: int) -> list[tuple[list[tuple[str, float]], float]]:
        """`(fragments, part weight)` of every AND part at `step`, looked up as `texts_at`."""
        return [(part.at(step).fragments, part.weight) for part in self.parts]

    def texts(self) -> list[str]:
        """Every distinct text of the plan, in order of first use (what needs encoding)."""
        seen: dict[str, None] = {}
        for part in self.parts:
            for segment in part.schedule:
                seen.setdefault(segment.text, None)
        return list(seen)

    @property
    def is_static(self) -> bool:
        """True when the conditioning never changes during sampling."""
        return all(len(part.schedule) == 1 for part in self.parts)

    def to_dict(self) -> dict[str, Any]:
        parts = []
        for part in self.parts:
            segments = []
            start = 1
            for seg, applied in zip(part.schedule, part.applied_steps(), strict=True):
                segments.append(
                    {
                        "start_step": start,
                        "end_step": seg.end_step,
                        "applied_steps": list(applied) if applied else None,
                        "text": seg.text,
                        "fragments": [
                            {"text": text, "weight": weight, "break": is_break((text, weight))}
                            for text, weight in seg.fragments
                        ],
                    }
                )
                start = seg.end_step + 1
            parts.append({"weight": part.weight, "text": part.text, "schedule": segments})
        return {
            "prompt": self.prompt,
            "steps": self.steps,
            "negative": self.negative,
            "parts": parts,
            "notes": list(self.notes),
        }


def _notes(part_text: str, parsed: bool, segments: list[ScheduledText]) -> list[str]:
    notes: list[str] = []
    if not parsed:
        notes.append(
            f"{part_text!r} does not fit AUTOMATIC1111's scheduling grammar (typically a '|' "
            "that is not directly inside [...], as in (a|b) or at the top level, or a ':' "
            "inside [a|b]): the whole text is used literally, with no prompt editing or "
            "alternation, as AUTOMATIC1111 does"
        )
    leftover = {m.group(0) for seg in segments for m in _LEFTOVER.finditer(seg.text)}
    if parsed and leftover:
        notes.append(
            f"{', '.join(sorted(leftover))} in {part_text!r} is left as written: "
            "AUTOMATIC1111's parser reads it literally here (typically because brackets that "
            "match nothing follow it, or it sits inside a group that does not parse)"
        )
    if any(
        text == BREAK and weight < 0 and not is_break((text, weight))
        for seg in segments
        for text, weight in seg.fragments
    ):
        notes.append(
            "BREAK inside brackets is not a chunk break: AUTOMATIC1111 encodes it as the word "
            "'BREAK' with a negative weight; move it out of the brackets"
        )
    return notes


def plan(prompt: str, steps: int, *, negative: bool = False) -> PromptPlan:
    """Positive prompt: split on AND, schedule each part, parse each scheduled text. Negative
    prompt (`negative=True`): no AND split (A1111 passes it to the plain conditioning path),
    one part of weight 1.0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    split = [(prompt, 1.0)] if negative else split_and(prompt)
    parts: list[PlanPart] = []
    notes: list[str] = []
    for text, weight in split:
        entries, parsed = schedule_checked(text, steps)
        segments = [ScheduledText(end, s, parse_attention(s)) for end, s in entries]
        parts.append(PlanPart(weight, text, segments))
        notes.extend(n for n in _notes(text, parsed, segments) if n not in notes)
    return PromptPlan(prompt=prompt, steps=steps, negative=negative, parts=parts, notes=notes)

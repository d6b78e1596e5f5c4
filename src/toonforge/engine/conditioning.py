"""The conditioning in force at each sampling step, from AUTOMATIC1111-syntax prompts.

`toonforge.prompts.plan` turns a prompt into AND parts (each with a guidance weight), each
with a schedule of texts (prompt editing `[a:b:when]`, alternation `[a|b]`); this module
encodes every distinct text once and hands the sampler, for step i, the negative embedding
and the positive embeddings with their weights, all padded to one length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from toonforge.engine.contract import ModelError
from toonforge.engine.prompt_embeds import EncodedText, Fragments, pad_chunks
from toonforge.prompts import PromptError, PromptPlan, plan


@dataclass
class StepConditioning:
    negative: torch.Tensor  # [1, L, dim]
    positives: list[tuple[torch.Tensor, float]]  # AND parts: ([1, L, dim], weight)
    negative_pooled: torch.Tensor | None = None  # SDXL
    positive_pooled: list[torch.Tensor] | None = None

    @property
    def plain(self) -> bool:
        """One positive of weight 1: ordinary classifier-free guidance."""
        return len(self.positives) == 1 and self.positives[0][1] == 1.0


class PromptSchedule:
    """Encodings of a prompt pair for every step of a `steps`-step sampling run."""

    def __init__(
        self,
        encode: Callable[[Fragments], EncodedText],
        prompt: str,
        negative_prompt: str,
        steps: int,
    ):
        try:
            self.positive_plan: PromptPlan = plan(prompt, steps)
            self.negative_plan: PromptPlan = plan(negative_prompt, steps, negative=True)
        except (PromptError, ValueError) as exc:
            raise ModelError(f"prompt: {exc}") from exc
        self.steps = steps
        self._encode = encode
        self._cache: dict[tuple[tuple[str, float], ...], EncodedText] = {}
        self._empty = encode([("", 1.0)])
        self._steps: dict[int, StepConditioning] = {}

    def _encoded(self, fragments: Fragments) -> EncodedText:
        key = tuple(fragments)
        if key not in self._cache:
            self._cache[key] = self._encode(fragments)
        return self._cache[key]

    def at(self, step: int) -> StepConditioning:
        """The conditioning for the sampler's 0-based step `step`.

        As in AUTOMATIC1111 (`reconstruct_cond_batch(c, current_step)`), the 0-based step is
        compared with the schedule's `end_step` (`current_step <= end_at_step`): the text of a
        segment ending at N is in force for sampler steps 0..N, i.e. one step longer than the
        numbers suggest. Reproduced so that a prompt ported from A1111 gives its images.
        """
        step = min(max(step, 0), self.steps)
        if step not in self._steps:
            neg = self._encoded(self.negative_plan.fragments_at(step)[0][0])
            pos = [(self._encoded(f), w) for f, w in self.positive_plan.fragments_at(step)]
            chunks = max([neg.chunks, *(p.chunks for p, _ in pos)])
            empty = self._empty.hidden

            def pad(e: EncodedText) -> torch.Tensor:
                return pad_chunks(e.hidden, chunks, empty)

            self._steps[step] = StepConditioning(
                negative=pad(neg),
                positives=[(pad(p), w) for p, w in pos],
                negative_pooled=neg.pooled,
                positive_pooled=[p.pooled for p, _ in pos] if neg.pooled is not None else None,
            )
        return self._steps[step]

    @property
    def chunks(self) -> int:
        return max(e.chunks for e in [self._empty, *self._cache.values()])

    def describe(self) -> dict[str, Any]:
        """What the task's debugoutput shows of the prompt: parts, schedules, notes."""

        def segments(p: PromptPlan) -> list[dict[str, Any]]:
            # In 1-based sampling steps as really run (see `at`): a segment ending at N
            # covers sampler steps up to N + 1; one that starts past the end never runs.
            out = []
            for part in p.parts:
                start = 1
                for seg in part.schedule:
                    end = min(seg.end_step + 1, self.steps)
                    if start <= end:
                        span = [start, end]
                        out.append({"weight": part.weight, "steps": span, "text": seg.text})
                    start = end + 1
            return out

        info: dict[str, Any] = {
            "prompt_schedule": segments(self.positive_plan),
            "prompt_chunks": self.chunks,
        }
        if not self.negative_plan.is_static:
            info["negative_prompt_schedule"] = segments(self.negative_plan)
        notes = self.positive_plan.notes + self.negative_plan.notes
        if notes:
            info["prompt_notes"] = notes
        return info

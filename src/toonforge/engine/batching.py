"""One denoising run for several tasks at once (cross-task batching).

Tasks that share a batch key (toonforge.catalog.batch_key: same size, steps, scheduler,
guidance, clip skip, adapters) are sampled together: their latents are stacked, and at every
step one UNet call takes every task's rows with that task's own conditioning (its prompt,
prompt schedule and AND weights), then one scheduler step moves them all, each row with its
own generator. What each task gets is the same as when it runs alone, byte for byte:

- its starting noise comes from its own per-sample generators (seed + i), drawn exactly as
  the lone path draws it; the scheduler's per-step noise likewise (one generator per row);
- guidance is computed per task with the lone path's own expression;
- the UNet's row-independent kernels give each row the same values whatever the batch size,
  except the timestep embeddings, whose small matmuls (M = batch) take another CPU kernel
  path at another M: `rowwise_embeddings` computes them one row at a time, in the lone path
  too, so both paths use the same kernel.

A task whose `should_stop(index)` turns true (Kill, shutdown) leaves at the next step: its
rows are dropped from the latents, the generators and the scheduler's own per-row state,
and the others go on. A task whose latents turn non-finite fails alone the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

from toonforge.engine.common import check_finite
from toonforge.engine.conditioning import StepConditioning
from toonforge.engine.contract import GenerationInterrupted, GenerationResult, ModelError
from toonforge.engine.prompt_embeds import EncodedText, Fragments
from toonforge.engine.rowwise import rowwise_embeddings
from toonforge.engine.sd_sampling import StepCallbackFailed
from toonforge.engine.steps import sample_seeds

# For SDXL: (conditioning, rows, uses the unconditional pass) -> the UNet's added_cond_kwargs
# for this member's rows, in the member's context order.
MemberAddedCond = Callable[[StepConditioning, int, bool], dict[str, torch.Tensor]]


Encode = Callable[[Fragments], EncodedText]


def shared_encodings(encode: Encode) -> Encode:
    """`encode` with one cache for every task of a batch: a text several tasks share (the
    empty prompt, a common negative prompt) is encoded once. Encoding is deterministic and
    always one text at a time, so a cached encoding is the one the task would make alone."""
    cache: dict[tuple[tuple[str, float], ...], EncodedText] = {}

    def cached(fragments: Fragments) -> EncodedText:
        key = tuple(fragments)
        if key not in cache:
            cache[key] = encode(fragments)
        return cache[key]

    return cached


@dataclass
class Member:
    """One task in the batch: its rows of the latents and what conditions them."""

    index: int  # the task's position in the batch as the caller gave it
    latents: torch.Tensor  # [samples, C, h, w], already scaled by init_noise_sigma
    conditioning: Callable[[int], StepConditioning]
    generators: list[torch.Generator]
    added_cond: MemberAddedCond | None = None

    @property
    def rows(self) -> int:
        return int(self.latents.shape[0])


@dataclass
class MemberResult:
    index: int
    latents: torch.Tensor | None = None  # the final latents; None when it left early
    error: Exception | None = None  # GenerationInterrupted or ModelError


class BatchTask:
    """One task of a batch: its request, prompt schedule and per-sample seeds, seeded
    exactly as the lone path seeds them (engine/steps.py), so its bytes do not depend on
    the batch."""

    def __init__(self, index: int, req: Any, schedule: Any) -> None:
        self.index = index
        self.req = req
        self.schedule = schedule
        self.seeds, self.generators = sample_seeds(req.seed, req.samples)


def denoise_batch(
    unet: Any,
    scheduler: Any,
    members: Sequence[Member],
    timesteps: torch.Tensor,
    *,
    guidance: float,
    on_step: Callable[[int, int], None],
    should_stop: Callable[[int], bool],
    step_offset: int = 0,
    total_steps: int | None = None,
) -> list[MemberResult]:
    """Denoise every member together; one result per member, in the order given.

    `on_step(step, total)` follows every step (for the members still in); `should_stop(index)`
    is asked for each member after it, and a member for which it is true leaves with
    GenerationInterrupted.
    """
    import inspect

    rowwise_embeddings(unet)
    total = total_steps if total_steps is not None else step_offset + len(timesteps)
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    results = {m.index: MemberResult(m.index) for m in members}

    def fail(member: Member, exc: Exception) -> None:
        results[member.index].error = exc

    live = list(members)
    latents = torch.cat([m.latents for m in live])
    dtype = latents.dtype
    for i, t in enumerate(timesteps):
        if not live:
            break
        scaled = scheduler.scale_model_input(latents, t)
        guided = _guided_step(unet, scaled, t, live, i, guidance, dtype)
        extra: dict[str, Any] = {}
        if takes_generator:
            extra["generator"] = [g for m in live for g in m.generators]
        latents = scheduler.step(guided, t, latents, return_dict=False, **extra)[0]
        step = step_offset + i + 1
        latents, live = after_step(
            scheduler, latents, live, step, total, on_step, should_stop, fail
        )
    start = 0
    for m in live:
        results[m.index].latents = latents[start : start + m.rows]
        start += m.rows
    return [results[m.index] for m in members]


Row = TypeVar("Row", bound="HasRows")


class HasRows(Protocol):
    """A task's share of a batch's latents: its position in the batch and its row count."""

    @property
    def index(self) -> int: ...
    @property
    def rows(self) -> int: ...


def after_step(
    scheduler: Any,
    latents: torch.Tensor,
    live: list[Row],
    step: int,
    total: int,
    on_step: Callable[[int, int], None],
    should_stop: Callable[[int], bool],
    fail: Callable[[Row, Exception], None],
) -> tuple[torch.Tensor, list[Row]]:
    """What every batched loop does after a scheduler step: a member whose rows turned
    non-finite fails (`fail(member, ModelError)`), progress is reported for the others, and
    a member that should stop leaves (`fail(member, GenerationInterrupted)`); the rows of
    the members gone are dropped from the latents and the scheduler's state. The latents
    and members still in."""
    keep: list[Row] = []
    start = 0
    for m in live:
        rows = latents[start : start + m.rows]
        start += m.rows
        try:
            check_finite(rows, f"at denoising step {step}")
        except ModelError as exc:
            fail(m, exc)
            continue
        keep.append(m)
    try:
        if keep:
            on_step(step, total)
        stops = {m.index for m in keep if should_stop(m.index)}
    except Exception as exc:
        raise StepCallbackFailed(exc) from exc
    for m in keep:
        if m.index in stops:
            fail(m, GenerationInterrupted("stopped between steps"))
    keep = [m for m in keep if m.index not in stops]
    if len(keep) != len(live):
        return drop_rows(scheduler, latents, live, keep), keep
    return latents, live


def finished(outcomes: list[Any], started: float) -> list[Any]:
    """A batch's outcomes as returned: each result stamped with the run's seconds since
    `started` (monotonic), a task never reached (None) failed as "not run"."""
    elapsed = round(time.monotonic() - started, 3)
    for o in outcomes:
        if isinstance(o, GenerationResult):
            o.info["elapsed_seconds"] = elapsed
    return [o if o is not None else ModelError("not run") for o in outcomes]


def _guided_step(
    unet: Any,
    scaled: torch.Tensor,
    t: torch.Tensor,
    live: Sequence[Member],
    step: int,
    guidance: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """One UNet pass over every member's contexts (one call per prompt length, since the
    encoder states of one call must have one length), then each member's guidance."""
    plans = []  # (member, its scaled rows, conditioning, contexts, uses uncond)
    start = 0
    for m in live:
        cond = m.conditioning(step)
        use_uncond = not (guidance == 1.0 and cond.plain)
        contexts = ([cond.negative] if use_uncond else []) + [p for p, _ in cond.positives]
        plans.append((m, scaled[start : start + m.rows], cond, contexts, use_uncond))
        start += m.rows
    by_length: dict[int, list[int]] = {}
    for k, (_, _, _, contexts, _) in enumerate(plans):
        by_length.setdefault(int(contexts[0].shape[1]), []).append(k)
    eps_of: dict[int, torch.Tensor] = {}
    for ks in by_length.values():
        inputs, hidden, added = [], [], []
        for k in ks:
            m, rows, cond, contexts, use_uncond = plans[k]
            inputs.append(torch.cat([rows] * len(contexts)))
            hidden.extend(c.expand(m.rows, -1, -1) for c in contexts)
            if m.added_cond is not None:
                added.append(m.added_cond(cond, m.rows, use_uncond))
        kwargs: dict[str, Any] = {}
        if added:
            kwargs["added_cond_kwargs"] = {k: torch.cat([a[k] for a in added]) for k in added[0]}
        with torch.no_grad():
            eps = unet(
                torch.cat(inputs),
                t,
                encoder_hidden_states=torch.cat(hidden).to(dtype),
                return_dict=False,
                **kwargs,
            )[0]
        start = 0
        for k in ks:
            m, _, _, contexts, _ = plans[k]
            size = m.rows * len(contexts)
            eps_of[k] = eps[start : start + size]
            start += size
    guided = []
    for k, (_, _, cond, contexts, use_uncond) in enumerate(plans):
        outs = eps_of[k].chunk(len(contexts))
        if use_uncond:
            uncond, conds = outs[0], outs[1:]
            delta = sum(w * (e - uncond) for e, (_, w) in zip(conds, cond.positives, strict=True))
            guided.append(uncond + guidance * delta)
        else:
            guided.append(outs[0])
    return torch.cat(guided)


def drop_rows(
    scheduler: Any, latents: torch.Tensor, live: Sequence[HasRows], keep: Sequence[HasRows]
) -> torch.Tensor:
    """The latents of `keep` only, and the same rows of every per-row tensor the scheduler
    holds between steps (multistep histories, a stored sample)."""
    index: list[int] = []
    start = 0
    kept = {m.index for m in keep}
    for m in live:
        if m.index in kept:
            index.extend(range(start, start + m.rows))
        start += m.rows
    rows = torch.tensor(index, dtype=torch.long, device=latents.device)
    shape = tuple(latents.shape)

    def cut(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and tuple(value.shape) == shape:
            return value.index_select(0, rows)
        if isinstance(value, list):
            return [cut(v) for v in value]
        if isinstance(value, tuple):
            return tuple(cut(v) for v in value)
        return value

    for name, value in list(vars(scheduler).items()):
        if name != "config":
            setattr(scheduler, name, cut(value))
    return latents.index_select(0, rows)

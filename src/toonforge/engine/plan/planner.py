"""Choosing a memory plan for a tool on a device.

Candidates are tried in this order of preference, the first that fits is the plan:
1. the family's own precision: fully resident, then group offloading, then model CPU offload;
2. each lower-precision storage the machine can run (fp8 layerwise casting, GGUF Q8_0, Q6_K,
   Q5_K, Q4_K, bitsandbytes NF4, in that order), each fully resident, then group, then model
   offload;
3. sequential CPU offload (the slowest), in the family's precision, then in each lower one.
An override (`TOONFORGE_OFFLOAD` / `TOONFORGE_QUANTIZATION`, else the manifest's
`backend.offload` / `backend.quantization`) narrows the candidates to those it names.
On a CPU there is nothing to offload to: only `none` is tried, in float32 (the runtime's
default dtype on CPU), with the storage formats that run on CPU (fp8, GGUF).
When nothing fits, the plan says how much memory the least demanding candidate needs, what
each strategy would need, and the largest smaller request that fits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from toonforge.catalog.manifest import Manifest
from toonforge.engine.plan.candidates import STRATEGIES, Candidate, evaluate, part_storage
from toonforge.engine.plan.estimate import GB, QUANTIZATIONS, storage_label, weight_bytes
from toonforge.engine.plan.parts import FAMILY_DTYPE, FAMILY_PARTS, PartSpec, part_count
from toonforge.engine.plan.request import DefaultRequest, default_request


@dataclass(frozen=True)
class Device:
    kind: str  # "cuda" or "cpu"
    memory_bytes: int
    source: str  # where the figure comes from: "--gpu-memory", "cuda:0 free memory", ...

    @property
    def memory_gb(self) -> float:
        return self.memory_bytes / GB


@dataclass(frozen=True)
class PartPlan:
    name: str
    config: str
    parameters: int
    dtype: str  # storage: float16, bfloat16, fp8, gguf-q4_k, nf4, ...
    bytes: int
    # with strategy "group": diffusers' offload_type for this part ("block_level" for parts
    # with top-level block lists, "leaf_level" for the others); "" otherwise
    offload_type: str = ""


@dataclass
class Plan:
    tool: str
    family: str
    device: str
    memory_gb: float
    request: str
    compute_dtype: str
    fits: bool
    strategy: str
    quantization: str
    use_stream: bool
    peak_gb: float
    weights_gb: float
    host_gb: float
    peak_module: str
    parts: list[PartPlan]
    message: str = ""
    # when nothing fits: what each strategy would need at best, in GB
    needs_gb: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _offload_type(spec: PartSpec, strategy: str) -> str:
    if strategy != "group":
        return ""
    return "block_level" if part_count(spec.config).largest_block else "leaf_level"


def tool_parts(manifest: Manifest, req: DefaultRequest) -> tuple[PartSpec, ...]:
    specs = FAMILY_PARTS[manifest.backend.family]
    return tuple(s for s in specs if s.name != "refiner_unet" or req.refiner)


def _candidates(
    device: Device, offload: str, quantization: str, available: tuple[str, ...]
) -> list[tuple[str, str]]:
    quants = [q for q in QUANTIZATIONS if q in available]
    if device.kind != "cuda":
        order = [("none", "none")] + [("none", q) for q in quants if q != "nf4"]
    else:
        fast = ("none", "group", "model")
        order = [(s, "none") for s in fast]
        order += [(s, q) for q in quants for s in fast]
        order += [("sequential", "none")] + [("sequential", q) for q in quants]
    if offload != "auto":
        order = [c for c in order if c[0] == offload] or [(offload, "none")]
    if quantization != "auto":
        order = [c for c in order if c[1] == quantization] or [
            (offload if offload != "auto" else "none", quantization)
        ]
    return order


def _smaller_request(fits: Any, req: DefaultRequest) -> DefaultRequest | None:
    """The largest request below `req` that fits: fewer samples, or fewer frames, or else a
    smaller size (steps of 64 pixels, same aspect ratio; with one sample and one frame if
    the size alone is not enough)."""
    for n in range(req.samples - 1, 0, -1):
        if fits(replace(req, samples=n)):
            return replace(req, samples=n)
    for frames in range(req.frames - 1, 0, -1):
        smaller = replace(req, frames=frames, decode_batch=min(frames, req.decode_batch))
        if fits(smaller):
            return smaller
    longest = max(req.width, req.height)
    for base in (req, replace(req, samples=1, frames=1, decode_batch=1)):
        for side in range(longest - 64, 127, -64):
            w = max(64, round(base.width * side / longest / 64) * 64)
            h = max(64, round(base.height * side / longest / 64) * 64)
            if fits(replace(base, width=w, height=h)):
                return replace(base, width=w, height=h)
    return None


def plan_tool(
    manifest: Manifest,
    device: Device,
    *,
    offload: str = "auto",
    quantization: str = "auto",
    available: tuple[str, ...] = QUANTIZATIONS,
    request: DefaultRequest | None = None,
    host_memory: int | None = None,
    dtype: str | None = None,
) -> Plan:
    """The memory plan for `manifest`'s default request on `device`.

    `offload` / `quantization`: "auto" or a forced choice (settings first, then the
    manifest's `backend.offload` / `backend.quantization`; see `on_device.plan_on_device`).
    `available`: the storage formats this machine can run. `host_memory`: when given, an
    offloading candidate also needs its weights to fit in it (they wait there). `dtype`: the
    compute dtype when set (TOONFORGE_DTYPE), else the family's on CUDA, float32 on a CPU."""
    family = manifest.backend.family
    req = request or default_request(manifest)
    if dtype is None:
        dtype = FAMILY_DTYPE[family] if device.kind == "cuda" else "float32"
    stream = device.kind == "cuda"
    specs = tool_parts(manifest, req)
    order = _candidates(device, offload, quantization, available)

    def run(strategy: str, quant: str, r: DefaultRequest = req) -> Candidate:
        return evaluate(family, tool_parts(manifest, r), r, dtype, strategy, quant, stream)

    tried = [run(s, q) for s, q in order]

    def fits_host(c: Candidate) -> bool:
        return host_memory is None or c.host_bytes <= host_memory

    chosen = next((c for c in tried if c.peak_bytes <= device.memory_bytes and fits_host(c)), None)
    fits = chosen is not None
    best = chosen or min(tried, key=lambda c: c.peak_bytes)
    if all(part_storage(s, best.quantization) == "none" for s in specs):
        best = replace(best, quantization="none")  # a format none of these parts takes
    parts = [
        PartPlan(
            s.name,
            s.config,
            part_count(s.config).parameters,
            storage_label(part_storage(s, best.quantization), dtype),
            weight_bytes(part_count(s.config), dtype, part_storage(s, best.quantization)),
            _offload_type(s, best.strategy),
        )
        for s in specs
    ]
    plan = Plan(
        tool=manifest.key,
        family=family,
        device=f"{device.kind} ({device.memory_gb:.1f} GB, {device.source})",
        memory_gb=round(device.memory_gb, 2),
        request=req.describe(),
        compute_dtype=dtype,
        fits=fits,
        strategy=best.strategy,
        quantization=best.quantization,
        use_stream=stream and best.strategy == "group",
        peak_gb=round(best.peak_bytes / GB, 2),
        weights_gb=round(best.weights_bytes / GB, 2),
        host_gb=round(best.host_bytes / GB, 2),
        peak_module=best.peak_module,
        parts=parts,
    )
    notes = []
    if quantization not in ("auto", "none") and quantization not in available:
        package = "bitsandbytes on CUDA" if quantization == "nf4" else "the gguf package"
        notes.append(f"{quantization} was asked for but needs {package}, not available here")
    if not fits:

        def fits_smaller(r: DefaultRequest) -> bool:
            for s, q in order:
                c = run(s, q, r)
                if c.peak_bytes <= device.memory_bytes and fits_host(c):
                    return True
            return False

        unforced = None
        if (offload, quantization) != ("auto", "auto"):
            for s, q in _candidates(device, "auto", "auto", available):
                c = run(s, q)
                if c.peak_bytes <= device.memory_bytes and fits_host(c):
                    unforced = c
                    break
        notes.insert(0, _explain(plan, tried, device, fits_smaller, req, host_memory, unforced))
    plan.message = "; ".join(notes)
    return plan


def _label(c: Candidate) -> str:
    return c.strategy if c.quantization == "none" else f"{c.strategy}+{c.quantization}"


def _explain(
    plan: Plan,
    tried: list[Candidate],
    device: Device,
    fits: Any,
    req: DefaultRequest,
    host_memory: int | None,
    unforced: Candidate | None,
) -> str:
    """Say what cannot fit: the least memory any option needs, what each strategy needs at
    best, options held back only by host memory, what fits without the forced choice, and
    the largest smaller request that fits."""
    for strategy in STRATEGIES:
        options = [c for c in tried if c.strategy == strategy]
        if options:
            least = min(options, key=lambda c: c.peak_bytes)
            plan.needs_gb[_label(least)] = round(least.peak_bytes / GB, 2)
    least = min(tried, key=lambda c: c.peak_bytes)
    ways = ", ".join(f"{k} {v:.1f} GB" for k, v in plan.needs_gb.items())
    parts = [
        f"does not fit in {device.memory_gb:.1f} GB: {plan.request} needs at least "
        f"{least.peak_bytes / GB:.1f} GB ({_label(least)}; peak while the "
        f"{least.peak_module} runs). Device memory needed per option: {ways}"
    ]
    held = [c for c in tried if c.peak_bytes <= device.memory_bytes]
    if held and host_memory is not None:
        c = min(held, key=lambda c: c.host_bytes)
        parts.append(
            f"{_label(c)} would fit the device but keeps {c.host_bytes / GB:.1f} GB of "
            f"weights in host memory ({host_memory / GB:.1f} GB available)"
        )
    if unforced is not None:
        parts.append(
            f"without the forced offload/quantization, {_label(unforced)} fits "
            f"({unforced.peak_bytes / GB:.1f} GB)"
        )
    smaller = _smaller_request(fits, req)
    parts.append(
        f"a smaller request fits: {smaller.describe()}" if smaller else "no smaller request fits"
    )
    return "; ".join(parts)


def images_that_fit(
    manifest: Manifest, device: Device, plan: Plan, req: DefaultRequest, cap: int
) -> int:
    """The most images (at most `cap`, at least 1) one batched run of `req`-like tasks can
    take on `device` under `plan` (its strategy, storage and compute dtype): the largest
    number of samples whose activation peak, with the plan's weights, fits the device's
    memory."""
    family = manifest.backend.family
    stream = device.kind == "cuda"
    for n in range(max(1, cap), 1, -1):
        r = replace(req, samples=n)
        c = evaluate(
            family,
            tool_parts(manifest, r),
            r,
            plan.compute_dtype,
            plan.strategy,
            plan.quantization,
            stream,
        )
        if c.peak_bytes <= device.memory_bytes:
            return n
    return 1

"""The schema of a tool manifest.

A manifest carries everything the tool's page says (owner, slug, inputs in page order,
"Parameter Inspires" examples, categories, tags, cover, price) plus the backend recipe the
engine needs (family, weights, LoRAs, trigger words). Input types are the page's own:
``text``, ``textarea``, ``number``, ``float``, ``select``, ``range``, and the file inputs
``fileinput`` (the hosted docs' name, which the official client recognises) or ``file``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

InputType = Literal[
    "text", "textarea", "number", "float", "select", "range", "file", "fileinput", "checkbox"
]
FILE_INPUT_TYPES = frozenset({"file", "fileinput"})


class SelectOption(BaseModel):
    model_config = ConfigDict(extra="allow")

    value: str
    label: str
    description: str | None = None
    triggerwords: list[str] | None = None


class InputSpec(BaseModel):
    """One input as listed on the tool page, plus the bounds toonforge enforces."""

    model_config = ConfigDict(extra="forbid")

    name: str
    label: str
    help: str = ""
    type: InputType
    default: Any = ""
    options: list[SelectOption] | None = None
    # Bounds are toonforge's own (the page has none): they keep requests within what the
    # model and the machine can do, and each violation is reported with the input's name.
    min: float | None = None
    max: float | None = None
    multiple_of: int | None = None
    integer: bool = False  # a `number` that must be whole (samples, steps, width)
    max_length: int | None = None  # for text inputs
    seed: bool = False  # a `text` input that holds a seed: empty or an integer
    required: bool = False

    @property
    def is_file(self) -> bool:
        return self.type in FILE_INPUT_TYPES

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if self.type == "select" and self.options is None:
            raise ValueError(f"select input {self.name!r} needs options")
        return self


class WeightFile(BaseModel):
    """A file the engine loads. ``source`` tells an operator (and `models pull`) where to get it."""

    model_config = ConfigDict(extra="forbid")

    file: str  # file name inside the models folder (or inside repo when repo is set)
    repo: str | None = None  # a Hugging Face repository holding the file
    url: str | None = None  # a direct download address, when the authors publish one
    sha256: str | None = None
    note: str | None = None  # how to obtain it when no public source is known


class Embedding(WeightFile):
    token: str  # the word that calls it in a prompt


class Lora(WeightFile):
    name: str  # adapter name (also the select value for selectable LoRAs)
    weight: float = 1.0
    trigger_words: list[str] = Field(default_factory=list)


class BaseModelChoice(BaseModel):
    """A selectable base model (AnimateDiff's `selectedModel`)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    checkpoint: WeightFile
    trigger_words: list[str] = Field(default_factory=list)


class Backend(BaseModel):
    """The recipe an engine family follows for this tool."""

    model_config = ConfigDict(extra="allow")

    family: Literal["sd15", "sdxl", "flux", "animatediff"]
    # Diffusers-layout repository giving configs/tokenizers (and, for hub-published bases,
    # the weights themselves).
    base_repo: str | None = None
    checkpoint: WeightFile | None = None  # a single-file checkpoint, as its authors publish it
    refiner_repo: str | None = None
    motion_adapter_repo: str | None = None
    loras: list[Lora] = Field(default_factory=list)
    embeddings: list[Embedding] = Field(default_factory=list)
    base_models: list[BaseModelChoice] = Field(default_factory=list)
    default_base_model: str | None = None
    trigger_words: list[str] = Field(default_factory=list)
    true_cfg: bool = False  # FLUX: a negative prompt turns on true CFG only when enabled
    # FLUX with true_cfg: the classifier-free guidance scale applied with a negative prompt
    # (diffusers' `true_cfg_scale`; must be above 1 for CFG to run).
    true_cfg_scale: float = Field(default=4.0, gt=1.0)
    # The dtype the tool runs in (float32, float16, bfloat16); unset: the family's default
    # for the device (engine/precision.py). TOONFORGE_DTYPE overrides it.
    dtype: Literal["float32", "float16", "bfloat16"] | None = None
    # Memory plan overrides for this tool (engine.plan): an offload strategy and a storage
    # format; unset lets the planner choose. TOONFORGE_OFFLOAD / TOONFORGE_QUANTIZATION win.
    offload: Literal["none", "group", "model", "sequential"] | None = None
    # FLUX: the quantized transformer files a GGUF plan loads, by type (q8_0, q6_k, q5_k,
    # q4_k), e.g. the community's city96/FLUX.1-dev-gguf.
    gguf: dict[str, WeightFile] = Field(default_factory=dict)
    quantization: (
        Literal["none", "fp8", "gguf-q8_0", "gguf-q6_k", "gguf-q5_k", "gguf-q4_k", "nf4"] | None
    ) = None
    # Cross-task batching: the most images one batched run of this tool takes (unset: the
    # server's TOONFORGE_MAX_BATCH; the smaller of the two applies, and on a GPU the memory
    # plan may allow fewer).
    max_batch: int | None = Field(default=None, ge=1)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str  # modelid in task records
    owner: str  # slugowner exactly as on the page
    slug: str  # slugproject exactly as on the page (may hold spaces and dots)
    title: str
    description: str
    cover: str
    categories: list[str]
    tags: list[str]
    cps: str = Field(description="price per second of run time, as a decimal string")
    engine_ready: bool = True  # false while the family's engine is not built yet
    engine_note: str = ""  # shown in Tool/Detail when engine_ready is false
    # When the tool became runnable on this server (ISO 8601); Tool/List's `sort: time`
    # orders by it. A manifest without it gets its file's modification time when loaded.
    added: datetime | None = None
    inputs: list[InputSpec]
    inspire: list[dict[str, Any]] = Field(default_factory=list)
    backend: Backend

    @property
    def key(self) -> str:
        return f"{self.owner}/{self.slug}"

    @property
    def cleanslug(self) -> str:
        return clean_slug(self.slug)

    @property
    def cleanslugowner(self) -> str:
        return clean_slug(self.owner)

    def input(self, name: str) -> InputSpec | None:
        return next((i for i in self.inputs if i.name == name), None)


def clean_slug(text: str) -> str:
    """`CartoonMix v1.0` -> `cartoonmix-v1-0`, as Tool/List's `cleanslugproject`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

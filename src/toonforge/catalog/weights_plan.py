"""Which weights a tool needs, as a flat list (torch-free: used by `toonforge models`)."""

from __future__ import annotations

from dataclasses import dataclass

from toonforge.catalog.manifest import Manifest, WeightFile


@dataclass(frozen=True)
class Needed:
    what: str  # "checkpoint", "embedding bad-hands-5", "repo configs", ...
    file: WeightFile | None = None  # a single file
    repo: str | None = None  # a whole diffusers-layout repository
    configs_only: bool = False  # only configs and tokenizers of `repo` are needed


def needed_weights(manifest: Manifest) -> list[Needed]:
    b = manifest.backend
    out: list[Needed] = []
    if b.base_repo:
        # A single-file checkpoint (or a choice of them, for AnimateDiff) takes only configs
        # and tokenizers from its base repo.
        configs_only = b.checkpoint is not None or bool(b.base_models)
        out.append(
            Needed(
                "base configs" if configs_only else "base model",
                repo=b.base_repo,
                configs_only=configs_only,
            )
        )
    if b.checkpoint:
        out.append(Needed("checkpoint", file=b.checkpoint))
    if b.refiner_repo:
        out.append(Needed("refiner", repo=b.refiner_repo))
    if b.motion_adapter_repo:
        out.append(Needed("motion adapter", repo=b.motion_adapter_repo))
    out += [Needed(f"embedding {e.token}", file=e) for e in b.embeddings]
    out += [Needed(f"LoRA {lora.name}", file=lora) for lora in b.loras]
    for m in b.base_models:
        if m.checkpoint.file == "model_index.json" and m.checkpoint.repo:
            # A diffusers-layout repository: the whole folder is the model.
            out.append(Needed(f"base model {m.id}", repo=m.checkpoint.repo))
        else:
            out.append(Needed(f"base model {m.id}", file=m.checkpoint))
    return out

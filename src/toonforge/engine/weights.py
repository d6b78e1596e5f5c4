"""Find the files a tool's backend needs: tiny stand-ins, or real weights on this machine.

Real weights are looked up, never fetched: first in the models folder
(`settings.resolved_models_dir`, set by TOONFORGE_MODELS_DIR), then, for files that name a
Hugging Face repository, in the huggingface_hub cache with `local_files_only=True`. Anything
missing is a `WeightsMissing` that names the file, where it was expected, and how to provide
it; nothing is ever replaced by a stand-in behind the operator's back.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from toonforge.catalog.manifest import Embedding, Manifest, WeightFile
from toonforge.catalog.weights_plan import Needed
from toonforge.engine.contract import ModelError, WeightsMissing
from toonforge.settings import Settings

logger = logging.getLogger("toonforge.engine")

# What single-file SD1.5 checkpoints are configured from when a manifest names no repo
# (diffusers makes the same choice for "v1" checkpoints).
SD15_CONFIG_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@dataclass(frozen=True)
class ResolvedWeights:
    family: str
    tiny: bool
    # A diffusers-layout folder: configs and tokenizer for a single-file checkpoint, or the
    # whole model when `checkpoint` is None.
    base_dir: Path
    checkpoint: Path | None = None
    embeddings: tuple[tuple[str, Path], ...] = field(default_factory=tuple)

    @property
    def identity(self) -> str:
        """Pool key: the same files (same size and mtime) give the same loaded pipeline."""
        parts = [self.family, "tiny" if self.tiny else "real", stamp(self.base_dir)]
        if self.checkpoint is not None:
            parts.append(stamp(self.checkpoint))
        parts += [f"{token}={stamp(path)}" for token, path in self.embeddings]
        return "|".join(parts)

    @property
    def files(self) -> list[Path]:
        paths = [self.checkpoint] if self.checkpoint else []
        return paths + [p for _, p in self.embeddings]


def stamp(path: Path) -> str:
    """`path@size:mtime`: part of a pool key, so that a replaced file is loaded again."""
    try:
        st = path.stat()
    except OSError:
        return str(path)
    return f"{path}@{st.st_size}:{st.st_mtime_ns}"


def _how_to_get(manifest: Manifest, wf: WeightFile | None, expected: Path, what: str) -> str:
    put = f"put the {what} at {expected} (TOONFORGE_MODELS_DIR sets the models folder)"
    note = f" Note: {wf.note}" if wf is not None and wf.note else ""
    if wf is not None and wf.repo is None and wf.url is None:
        return f"No public download is known; to provide it, {put}.{note}"
    pull = f"toonforge models pull {shlex.quote(manifest.key)}"
    return f"Get it with `{pull}`, or {put}.{note}"


def local_candidates(settings: Settings, wf: WeightFile) -> list[Path]:
    """Where a weight file may lie in the models folder, preferred place first:
    `<models>/<repo>/<file>` for a file of a repository (several repositories publish the same
    file name: the eight motion LoRAs are all diffusion_pytorch_model.safetensors), then
    `<models>/<file>`."""
    models = settings.resolved_models_dir
    first = [models / wf.repo / wf.file] if wf.repo else []
    return [*first, models / wf.file]


def find_local_file(settings: Settings, wf: WeightFile) -> Path | None:
    """The file in the models folder or the Hugging Face cache (never downloaded), or None."""
    for local in local_candidates(settings, wf):
        if local.is_file():
            return local
    if wf.repo:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(wf.repo, wf.file)
        if isinstance(cached, str):
            return Path(cached)
    return None


def resolve_file(settings: Settings, manifest: Manifest, wf: WeightFile) -> Path:
    """The local path of one weight file, or WeightsMissing."""
    found = find_local_file(settings, wf)
    if found is not None:
        return found
    expected = local_candidates(settings, wf)[0]
    where = f" (nor in the Hugging Face cache of {wf.repo})" if wf.repo else ""
    raise WeightsMissing(
        f"weight file {wf.file!r} for {manifest.key} is missing: expected at {expected}{where}. "
        + _how_to_get(manifest, wf, expected, "file")
    )


def resolve_repo(settings: Settings, manifest: Manifest, repo: str, marker: str) -> Path:
    """A diffusers-layout repository: `<models dir>/<owner>/<name>` or the hub cache.

    `marker` is a file the folder must hold (`model_index.json`), so that a half-copied folder
    fails here with a clear message rather than deep inside diffusers.
    """
    local = settings.resolved_models_dir / repo
    if (local / marker).is_file():
        return local
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        cached = Path(snapshot_download(repo, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        cached = None
    if cached is not None and (cached / marker).is_file():
        return cached
    raise WeightsMissing(
        f"model repository {repo!r} for {manifest.key} is missing: expected a diffusers folder "
        f"at {local} or in the Hugging Face cache. " + _how_to_get(manifest, None, local, "folder")
    )


def resolve_weights(settings: Settings, manifest: Manifest) -> ResolvedWeights:
    """The files of an sd15 tool (single-file checkpoint or diffusers folder, embeddings)."""
    family = manifest.backend.family
    if family != "sd15":
        raise ModelError(f"resolve_weights is for sd15 tools, not {family}")
    if manifest.backend.loras:
        # Refuse rather than run the tool without the LoRAs its page promises.
        raise ModelError(f"{manifest.key}: LoRAs on sd15 tools are not supported yet")
    if settings.tiny:
        return _tiny_sd15(settings, manifest)
    return _real_sd15(settings, manifest)


def _real_sd15(settings: Settings, manifest: Manifest) -> ResolvedWeights:
    backend = manifest.backend
    checkpoint = None
    if backend.checkpoint is not None:
        checkpoint = resolve_file(settings, manifest, backend.checkpoint)
    repo = backend.base_repo or SD15_CONFIG_REPO
    base_dir = resolve_repo(settings, manifest, repo, "model_index.json")
    embeddings = tuple((e.token, resolve_file(settings, manifest, e)) for e in backend.embeddings)
    return ResolvedWeights("sd15", False, base_dir, checkpoint, embeddings)


def _tiny_sd15(settings: Settings, manifest: Manifest) -> ResolvedWeights:
    from toonforge.engine.tiny.sd15 import ensure_tiny_embedding, ensure_tiny_sd15

    paths = ensure_tiny_sd15(settings.tiny_models_dir)
    embeddings = tuple(
        (e.token, ensure_tiny_embedding(paths, e.token, _tiny_name(e)))
        for e in manifest.backend.embeddings
    )
    return ResolvedWeights("sd15", True, paths.config_dir, paths.checkpoint, embeddings)


def _tiny_name(embedding: Embedding) -> str:
    # Keep the published file's format (.pt / .safetensors) so the same loader path runs.
    return Path(embedding.file).name


def _file_path(settings: Settings, need: Needed) -> Path | None:
    assert need.file is not None
    return find_local_file(settings, need.file)


def _repo_path(settings: Settings, need: Needed) -> Path | None:
    assert need.repo is not None
    local = settings.resolved_models_dir / need.repo
    if (local / "model_index.json").is_file() or (local / "config.json").is_file():
        return local
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(need.repo, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def locate(settings: Settings, need: Needed) -> Path | None:
    """Where a needed file or repository is on this host (models folder, then the Hugging
    Face cache), or None."""
    return _file_path(settings, need) if need.file else _repo_path(settings, need)

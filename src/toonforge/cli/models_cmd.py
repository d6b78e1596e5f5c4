"""`toonforge models status | pull`: what weights each tool needs, which are here, and
downloading them (Hugging Face repositories through huggingface_hub's cache, direct URLs
into the models folder)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from toonforge.catalog import Catalog, Manifest, load_catalog
from toonforge.catalog.weights_plan import Needed, needed_weights
from toonforge.cli.common import settings_from_args
from toonforge.engine.weights import locate
from toonforge.processes import pid_alive
from toonforge.settings import Settings

CONFIG_PATTERNS = ["*.json", "*.txt", "*.model", "tokenizer*/*", "*/*.json", "*/*.txt"]


def _find(catalog: Catalog, name: str) -> Manifest:
    owner, _, slug = name.partition("/")
    manifest = catalog.find(owner, slug)
    if manifest is None:
        known = ", ".join(repr(m.key) for m in catalog)
        raise SystemExit(f"toonforge: no tool {name!r}; known tools: {known}")
    return manifest


def loaded_parts(settings: Settings) -> list[dict[str, Any]]:
    """What live workers have in memory: from the `workers` table (every worker on every
    host writes its row on each heartbeat), or, where the database cannot be read, from
    the files workers on this host publish (`<data>/state/loaded/<pid>.json`)."""
    try:
        return _loaded_from_database(settings)
    except Exception:  # unreachable or not migrated yet: what this host's files say
        return _loaded_from_files(settings)


def _loaded_from_database(settings: Settings) -> list[dict[str, Any]]:
    from toonforge.tasks.db import make_engine, make_sessionmaker
    from toonforge.tasks.workers import live_workers

    url = settings.resolved_database_url
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).is_file():
        raise FileNotFoundError("no database yet")  # never create one just to look
    engine = make_engine(url, pool_size=1)
    try:
        with make_sessionmaker(engine, readonly=True)() as session:
            workers = live_workers(session, settings.heartbeat_seconds)
            return [
                {**part, "pid": w.pid, "host": w.host, "device": w.device}
                for w in workers
                for part in w.loaded or []
            ]
    finally:
        engine.dispose()


def _loaded_from_files(settings: Settings) -> list[dict[str, Any]]:
    folder = settings.data_dir / "state" / "loaded"
    out: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pid = int(doc.get("pid", 0))
        if not pid or not pid_alive(pid):
            continue
        for part in doc.get("parts", []):
            out.append({**part, "pid": pid, "device": doc.get("device", "")})
    return out


def _worker_name(part: dict[str, Any]) -> str:
    return f"{part['host']}:{part['pid']}" if part.get("host") else str(part["pid"])


def _file_name(need: Needed) -> str:
    if need.file is None:
        return ""
    return f"{need.file.repo}/{need.file.file}" if need.file.repo else need.file.file


def status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    catalog = load_catalog(settings.extra_tools_dirs)
    manifests = [_find(catalog, args.tool)] if args.tool else list(catalog)
    print(f"models folder: {settings.resolved_models_dir}")
    if settings.tiny:
        print("offline mode is on: tasks run on tiny stand-ins, whatever is listed here")
    loaded = loaded_parts(settings)
    missing = 0
    for m in manifests:
        print(f"\n{m.key} ({m.backend.family}{'' if m.engine_ready else ', engine not built'})")
        for part in loaded:
            if m.key in part.get("tools", []):
                size = part.get("bytes", 0) / 1e6
                where = f"worker {_worker_name(part)} on {part['device']}"
                print(f"  loaded in {where}: {part['part'].split('|')[0]} ({size:.1f} MB)")
        for need in needed_weights(m):
            path = locate(settings, need)
            missing += path is None
            name = need.repo or _file_name(need)
            state = f"present  {path}" if path else "MISSING"
            print(f"  {need.what:<28} {name:<60} {state}")
    if not args.tool:
        print(f"\nloaded in running workers: {len(loaded)} part(s)")
        for part in loaded:
            tools = ", ".join(part.get("tools", []))
            size = part.get("bytes", 0) / 1e6
            name = _worker_name(part)
            print(f"  worker {name}: {part['part']} ({size:.1f} MB) used by {tools}")
    return 1 if missing else 0


def _download_url(url: str, target: Path) -> None:
    import httpx
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    headers = {}
    token = os.environ.get("CIVITAI_TOKEN")
    if token and "civitai.com" in url:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with (
            httpx.stream("GET", url, follow_redirects=True, timeout=60, headers=headers) as r,
            os.fdopen(fd, "wb") as fh,
        ):
            r.raise_for_status()
            total = int(r.headers.get("content-length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                for chunk in r.iter_bytes(1 << 20):
                    fh.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def pull(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    manifest = _find(load_catalog(settings.extra_tools_dirs), args.tool)
    failed = 0
    for need in needed_weights(manifest):
        if locate(settings, need):
            print(f"present: {need.what}")
            continue
        print(f"pulling {need.what} ...")
        try:
            if need.repo:
                from huggingface_hub import snapshot_download

                snapshot_download(
                    need.repo, allow_patterns=CONFIG_PATTERNS if need.configs_only else None
                )
            elif need.file and need.file.repo:
                from huggingface_hub import hf_hub_download

                hf_hub_download(need.file.repo, need.file.file)
            elif need.file and need.file.url:
                _download_url(need.file.url, settings.resolved_models_dir / need.file.file)
            else:
                assert need.file is not None
                failed += 1
                print(
                    f"  no public source is known for {need.file.file}: place it at "
                    f"{settings.resolved_models_dir / need.file.file}. {need.file.note or ''}"
                )
        except Exception as exc:  # network and hub errors: say which file, go on with the rest
            failed += 1
            print(f"  could not download {need.what}: {exc}")
    return 1 if failed else 0

"""Loading the manifests and finding tools by their slugs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import yaml

from toonforge.catalog.manifest import Manifest, clean_slug

TOOLS_DIR = Path(__file__).resolve().parent / "tools"


class CatalogError(Exception):
    pass


class Catalog:
    def __init__(self, manifests: Iterable[Manifest]) -> None:
        self._tools: list[Manifest] = []
        self._by_key: dict[str, Manifest] = {}
        self._by_clean: dict[tuple[str, str], Manifest] = {}
        for m in manifests:
            if m.key in self._by_key:
                raise CatalogError(f"two manifests for {m.key}")
            self._tools.append(m)
            self._by_key[m.key] = m
            self._by_clean[(m.cleanslugowner, m.cleanslug)] = m

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def find(self, owner: str, slug: str) -> Manifest | None:
        """Exact owner/slug as the page writes it (`CartoonMix v1.0`), or the clean slug that
        Tool/List gives (`cartoonmix-v1-0`)."""
        exact = self._by_key.get(f"{owner}/{slug}")
        if exact is not None:
            return exact
        return self._by_clean.get((clean_slug(owner), clean_slug(slug)))

    def by_key(self, key: str) -> Manifest | None:
        return self._by_key.get(key)


def load_manifest(path: Path) -> Manifest:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        manifest = Manifest.model_validate(data)
    except Exception as exc:  # the file name is what an operator needs to fix it
        raise CatalogError(f"invalid tool manifest {path}: {exc}") from exc
    if manifest.added is None:
        # An operator's tool without a date is as new as its manifest file.
        mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
        manifest = manifest.model_copy(update={"added": mtime})
    return manifest


def load_catalog(extra_dirs: Iterable[Path] = ()) -> Catalog:
    """The built-in manifests, then any operator folders (a later file may not redefine a
    tool: two manifests for one slug is an error, not a silent override)."""
    paths = sorted(TOOLS_DIR.glob("*.yaml"))
    for d in extra_dirs:
        paths.extend(sorted(Path(d).glob("*.yaml")))
    return Catalog(load_manifest(p) for p in paths)

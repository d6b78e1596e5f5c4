"""Tool manifests: what each model takes, costs and needs (one YAML per tool)."""

from toonforge.catalog.manifest import InputSpec, Manifest, SelectOption
from toonforge.catalog.store import Catalog, load_catalog

__all__ = ["Catalog", "InputSpec", "Manifest", "SelectOption", "load_catalog"]

"""Rewrite counts.json from meta-device builds of every shipped config:
`python -m toonforge.engine.plan.counts_cache` (needs torch, diffusers, transformers)."""

from __future__ import annotations

import json

from toonforge.engine.plan.counting import count_part
from toonforge.engine.plan.parts import CACHE, all_configs, config_sha256


def build() -> dict[str, dict]:
    return {
        name: {"sha256": config_sha256(name), **count_part(name).to_json()}
        for name in all_configs()
    }


if __name__ == "__main__":
    CACHE.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {CACHE}")

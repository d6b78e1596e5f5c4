"""Every family keeps one contract; the registry finds them and refuses an incomplete one."""

from __future__ import annotations

import pytest

from toonforge.catalog import load_catalog
from toonforge.engine.contract import ModelError
from toonforge.engine.family import Family, family, names, register
from toonforge.engine.plan.parts import FAMILY_PARTS


def test_every_catalog_family_keeps_the_contract_and_is_planned() -> None:
    used = {m.backend.family for m in load_catalog()}
    assert used <= set(names())
    for name in names():
        assert isinstance(family(name), Family)
        # The memory planner answers for the same families.
        assert name in FAMILY_PARTS


def test_an_incomplete_family_is_a_clear_error() -> None:
    # A real module without the contract's functions.
    register("broken-for-test", "toonforge.engine.png")
    with pytest.raises(ModelError, match="lacks prepare, generate, model_for"):
        family("broken-for-test")
    with pytest.raises(ModelError, match="not built yet"):
        family("nonexistent")

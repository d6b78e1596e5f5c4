"""Which device each worker gets, and which tools each device takes (logic only)."""

from __future__ import annotations

import pytest

from toonforge.devices import Placement, parse_devices, worker_devices
from toonforge.settings import load_settings


def test_gpu_indexes_and_names_are_parsed() -> None:
    assert parse_devices("0, 1,3") == ["cuda:0", "cuda:1", "cuda:3"]
    assert parse_devices("cpu,cpu") == ["cpu", "cpu"]
    assert parse_devices("cuda:2,mps") == ["cuda:2", "mps"]
    assert parse_devices("") == []
    with pytest.raises(ValueError, match="gpu7"):
        parse_devices("0,gpu7")


def test_auto_on_four_gpus_is_one_worker_per_gpu() -> None:
    assert worker_devices("auto", [], 4, "auto") == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]


def test_four_workers_on_four_gpus_do_not_all_take_gpu_0() -> None:
    assert worker_devices(4, [], 4, "auto") == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert worker_devices(6, [], 4, "cuda") == [f"cuda:{i % 4}" for i in range(6)]


def test_chosen_devices_win() -> None:
    picked = parse_devices("0,1,3")
    assert worker_devices("auto", picked, 4, "auto") == ["cuda:0", "cuda:1", "cuda:3"]
    # More workers than devices: spread in turn (two per GPU here).
    assert worker_devices(6, picked, 4, "auto") == ["cuda:0", "cuda:1", "cuda:3"] * 2


def test_without_gpus_auto_is_one_worker_on_the_configured_device() -> None:
    assert worker_devices("auto", [], 0, "auto") == ["auto"]
    assert worker_devices(2, [], 0, "cpu") == ["cpu", "cpu"]
    assert worker_devices(0, [], 4, "auto") == []
    # An explicit single device is kept for every worker.
    assert worker_devices(3, [], 4, "cuda:2") == ["cuda:2"] * 3


def test_tool_placement_puts_a_big_model_on_the_big_card() -> None:
    placement = Placement.parse(
        "WizardWhitebeard/*=cuda:1; Adel_AI/Comics-Factory-v1=cuda:1,cuda:2"
    )
    assert placement.allows("WizardWhitebeard/Toon-Renders", "cuda:1")
    assert not placement.allows("WizardWhitebeard/Toon-Renders", "cuda:0")
    assert placement.allows("adel_ai/comics-factory-v1", "cuda:2")
    # A tool no rule names runs anywhere.
    assert placement.allows("futurist/CartoonMix v1.0", "cuda:0")
    assert Placement.parse("").allows("anything/at all", "cpu")


def test_bad_settings_name_the_setting() -> None:
    with pytest.raises(ValueError, match="devices"):
        load_settings(devices="0,banana")
    with pytest.raises(ValueError, match="tool_devices"):
        load_settings(tool_devices="no-equals-sign")
    assert load_settings(workers="auto").workers == "auto"
    assert load_settings(workers="3").workers == 3

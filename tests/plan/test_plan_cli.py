"""`toonforge models plan`, run in process through the CLI's entry point."""

from __future__ import annotations

import json

import pytest

from toonforge.cli.main import main

KEYS = {"tool", "fits", "strategy", "quantization", "peak_gb", "parts", "device", "request"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("GPU_MEMORY_GB", "OFFLOAD", "QUANTIZATION", "EXTRA_TOOLS_DIRS"):
        monkeypatch.delenv(f"TOONFORGE_{name}", raising=False)
    monkeypatch.setenv("TOONFORGE_DATA_DIR", str(tmp_path))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["models", "plan", *args])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("gb", ["12", "16", "24", "80"])
def test_json_plans_for_every_tool(capsys: pytest.CaptureFixture[str], gb: str) -> None:
    code, out = run(capsys, "--gpu-memory", gb, "--json")
    assert code == 0
    plans = json.loads(out)
    assert len(plans) == 5
    for plan in plans:
        assert set(plan) >= KEYS
        assert plan["fits"] is True and plan["peak_gb"] <= float(gb)
        for part in plan["parts"]:
            assert {"name", "parameters", "dtype", "bytes"} <= set(part)
            assert part["parameters"] > 0 and part["bytes"] > 0
    flux = next(p for p in plans if p["tool"] == "WizardWhitebeard/Toon-Renders")
    names = {p["name"]: p for p in flux["parts"]}
    assert names["transformer"]["parameters"] == 11_901_408_320
    assert names["text_encoder_2"]["parameters"] == 4_762_310_656
    if gb != "80":
        assert (flux["strategy"], flux["quantization"]) != ("none", "none")


def test_text_for_one_tool(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "retroAIx/Retro-Cartoons", "--gpu-memory", "12")
    assert code == 0
    assert "planned for: cuda, 12.0 GB (--gpu-memory)" in out
    assert "refiner_unet" in out and "2.26 B" in out and "2.57 B" in out
    assert "plan: group offloading (block level) with a CUDA stream, float16" in out
    assert "(fits," in out
    assert "Toon-Renders" not in out


def test_text_at_4_gb_names_what_does_not_fit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "wiro/animate-diff", "--gpu-memory", "4")
    assert code == 0
    assert "DOES NOT FIT" in out
    assert "does not fit in 4.0 GB: 512x512, 18 frames needs at least 4.9 GB" in out
    assert "a smaller request fits: 512x512, 6 frames" in out


def test_without_gpu_memory_it_says_which_device(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "futurist/CartoonMix v1.0")
    assert code == 0
    first = out.splitlines()[0]
    assert first.startswith(("planned for: cpu, ", "planned for: cuda, "))
    assert "host memory available" in first or "free memory" in first
    assert "plan: " in out


def test_setting_gives_the_memory(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOONFORGE_GPU_MEMORY_GB", "24")
    monkeypatch.setenv("TOONFORGE_QUANTIZATION", "fp8")
    code, out = run(capsys, "Adel_AI/Comics-Factory-v1", "--json")
    assert code == 0
    (plan,) = json.loads(out)
    assert plan["memory_gb"] == 24 and "TOONFORGE_GPU_MEMORY_GB" in plan["device"]
    assert plan["quantization"] == "fp8"
    transformer = next(p for p in plan["parts"] if p["name"] == "transformer")
    assert transformer["dtype"] == "fp8"


def test_errors_name_the_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="--gpu-memory must be a positive"):
        main(["models", "plan", "--gpu-memory", "0"])
    with pytest.raises(SystemExit, match="no tool 'acme/none'"):
        main(["models", "plan", "acme/none"])

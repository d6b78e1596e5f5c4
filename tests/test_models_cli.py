"""`toonforge models status | pull` against a real HTTP download on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from support import base_env

MANIFEST = {
    "id": "900",
    "owner": "acme",
    "slug": "Test Checkpoint",
    "title": "acme/Test Checkpoint",
    "description": "a tool whose checkpoint has a direct download address",
    "cover": "",
    "categories": ["text-to-image"],
    "tags": [],
    "cps": "0.001",
    "inputs": [{"name": "prompt", "label": "prompt", "type": "textarea", "default": ""}],
    "backend": {"family": "sd15", "checkpoint": {"file": "acme/test.safetensors", "url": ""}},
}


def toonforge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toonforge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_status_then_pull_from_url(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    payload = b"not really a checkpoint, but bytes to download" * 1000
    (served / "ckpt.bin").write_bytes(payload)
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        tools = tmp_path / "tools"
        tools.mkdir()
        manifest = {**MANIFEST}
        manifest["backend"] = {
            "family": "sd15",
            "checkpoint": {
                "file": "acme/test.safetensors",
                "url": f"http://127.0.0.1:{httpd.server_address[1]}/ckpt.bin",
            },
        }
        (tools / "acme.yaml").write_text(yaml.safe_dump(manifest))
        env = base_env(
            tmp_path / "data",
            None,
            TOONFORGE_TINY="false",
            TOONFORGE_EXTRA_TOOLS_DIRS=f'["{tools}"]',
        )
        before = toonforge(env, "models", "status", "acme/Test Checkpoint")
        assert before.returncode == 1 and "MISSING" in before.stdout, before.stdout
        pulled = toonforge(env, "models", "pull", "acme/test-checkpoint")
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        target = tmp_path / "data" / "models" / "acme" / "test.safetensors"
        assert target.read_bytes() == payload
        after = toonforge(env, "models", "status", "acme/Test Checkpoint")
        assert after.returncode == 0 and "present" in after.stdout, after.stdout
    finally:
        httpd.shutdown()


def test_pull_of_a_file_without_source_says_where_to_put_it(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", None, TOONFORGE_TINY="false")
    out = toonforge(env, "models", "pull", "WizardWhitebeard/Toon-Renders")
    assert out.returncode == 1
    assert "no public source is known" in out.stdout
    assert str(tmp_path / "data" / "models") in out.stdout


def test_unknown_tool(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", None)
    out = toonforge(env, "models", "status", "nobody/nothing")
    assert out.returncode == 1 and "no tool 'nobody/nothing'" in out.stderr


def test_files_of_the_same_name_are_told_apart_by_repository(tmp_path: Path) -> None:
    """The eight motion LoRAs are all diffusion_pytorch_model.safetensors: one placed in its
    repository's folder counts for that LoRA only."""
    models = tmp_path / "data" / "models"
    placed = models / "guoyww" / "animatediff-motion-lora-zoom-in"
    placed.mkdir(parents=True)
    (placed / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    env = base_env(tmp_path / "data", None, TOONFORGE_TINY="false")
    out = toonforge(env, "models", "status", "wiro/animate-diff").stdout
    lines = {line.split()[1]: line for line in out.splitlines() if "LoRA FILE:" in line}
    assert "present" in lines["FILE:169584"], out
    assert "MISSING" in lines["FILE:169585"], out
    assert "guoyww/animatediff-motion-lora-zoom-out/" in lines["FILE:169585"]

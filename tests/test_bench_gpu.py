"""bench/gpu.py keeps working: it runs every tool on the tiny stand-ins (CPU) and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from toonforge.catalog import load_catalog

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_every_tool_tiny(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu.py"),
            "--tiny",
            "--json",
            "--steps",
            "2",
            "--size",
            "64",
            "--samples",
            "1",
            "--frames",
            "2",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)
    assert {r["tool"] for r in rows} == {m.key for m in load_catalog() if m.engine_ready}
    for row in rows:
        unit = "frame" if "frames" in row else "image"
        assert row[f"seconds_per_{unit}"] > 0 and row["steps_per_second"] > 0
        assert row["peak_memory_gb"] > 0 and row["device"] == "cpu"
        assert row["plan"]["applied"] == {"strategy": "none", "quantization": "none"}
        assert row["request"]["steps"] == 2
    video = next(r for r in rows if "frames" in r)
    assert video["frames"] == 2

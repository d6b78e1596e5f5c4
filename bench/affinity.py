"""Model affinity against first-in first-out, with two workers and two tools.

A real `toonforge serve --tiny` with two workers, each able to hold one model at a time
(`TOONFORGE_MODEL_MEMORY_BUDGET_GB` tiny), gets a queue alternating CartoonMix (SD 1.5) and
Retro Cartoons (SDXL) tasks while its workers are held still; then they are let go. Printed
per mode: model loads (parts loaded, from each task's debugoutput), total time from release
to the last task's end, and the longest wait of a task. FIFO is affinity with a bound of 0.

    HF_HUB_OFFLINE=1 python bench/affinity.py [--tasks 12] [--steps 4] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import Client, Server, create_keys, workers_paused

TOOLS = ("futurist/CartoonMix%20v1.0", "retroAIx/Retro-Cartoons")


def _body(tool: str, args: argparse.Namespace, i: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": f"a cartoon cat number {i}",
        "samples": 1,
        "steps": args.steps,
        "seed": str(1000 + i),
        "width": args.size,
        "height": args.size,
    }
    if "Retro" in tool:
        body["refiner"] = "--only_base_model"
    return body


def run_mode(work: Path, bound: float, args: argparse.Namespace) -> dict[str, Any]:
    server = Server(
        work / f"server-{bound}",
        None,
        2,
        TOONFORGE_AFFINITY_MAX_WAIT_SECONDS=str(bound),
        TOONFORGE_MODEL_MEMORY_BUDGET_GB="0.0001",
    )
    keys = create_keys(server.env)
    server.start()
    client = Client(server.url, keys)
    try:
        deadline = time.monotonic() + 120
        while len(server.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # both workers ready and idle
        with workers_paused(server):
            ids = [
                client.run(TOOLS[i % 2], _body(TOOLS[i % 2], args, i))["taskid"]
                for i in range(args.tasks)
            ]
            released = time.time()
        details = [client.wait(task_id, timeout=600) for task_id in ids]
    finally:
        server.stop()
    loads = 0
    order = []
    for task in sorted(details, key=lambda t: float(t["starttime"])):
        assert task["pexit"] == "0", task["debugerror"]
        info = json.loads(task["debugoutput"] or "{}")
        loaded = [p["part"].split(":")[0] for p in info.get("parts", []) if not p["reused"]]
        loads += len(loaded)
        order.append(
            f"{task['id']}:{'SD' if 'CartoonMix' in task['modelslugproject'] else 'XL'}"
            f"{'*' if loaded else ''}"
        )
    if args.verbose:
        print(f"bound {bound}: start order (* = loaded a model): {' '.join(order)}")
    end = max(float(t["endtime"]) for t in details)
    waits = [float(t["starttime"]) - released for t in details]
    return {"loads": loads, "seconds": end - released, "max_wait": max(waits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--bound", type=float, default=60.0, help="affinity's wait bound (s)")
    parser.add_argument("--verbose", action="store_true", help="print each mode's start order")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="toonforge-affinity-"))
    os.environ.setdefault("TOONFORGE_TEST_TINY_DIR", str(work / "tiny"))
    fifo = run_mode(work, 0.0, args)
    affinity = run_mode(work, args.bound, args)
    print(f"{args.tasks} tasks alternating {' / '.join(TOOLS)}, 2 workers, one model each")
    for name, r in (("FIFO", fifo), (f"affinity (bound {args.bound:.0f}s)", affinity)):
        print(
            f"{name:<22} model loads {r['loads']:>3}   total {r['seconds']:6.2f}s   "
            f"longest wait {r['max_wait']:6.2f}s"
        )
    print(f"time affinity/FIFO: {affinity['seconds'] / fifo['seconds']:.3f}")


if __name__ == "__main__":
    main()

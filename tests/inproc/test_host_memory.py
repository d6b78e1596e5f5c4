"""Workers keep freed host memory for reuse: once the heap has grown to a run's needs, large
blocks freed and allocated again cost no page faults (without it, glibc unmaps each block on
free and every page faults in again at the next allocation).
Each case runs in a fresh interpreter, since the setting is for the whole process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import torch
from toonforge.worker.host_memory import keep_freed_host_memory
took = keep_freed_host_memory() if sys.argv[1] == "keep" else False
faults = []
for _ in range(10):  # as steps do: the same large blocks, freed and allocated again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block, other = torch.ones(16 * 2**20), torch.ones(2 * 2**20)  # 64 MB and 8 MB
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del block, other
print(took, sum(faults[-3:]))  # once the heap has grown to the run's needs
"""


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_a_freed_block_is_reused_without_page_faults() -> None:
    took, faults = _faults("keep")
    assert took
    assert faults < 100, faults
    # The default allocator faults the 64 MB block in again each time (16,384 pages of 4 KB).
    took, faults = _faults("default")
    assert not took
    assert faults > 10_000, faults

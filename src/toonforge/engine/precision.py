"""The floating-point type each family runs in, per device.

FLUX.1 is published in bfloat16 and its T5 encoder and transformer overflow in float16 (the
activations exceed float16's 65504 range, which ends in NaN latents and black images), so on
CUDA it runs in bfloat16. SD 1.5, SDXL and AnimateDiff were trained and are published in
float16-safe form and run in float16 on GPUs (the SDXL VAE decodes in float32 where its config
asks for it; see `sdxl.decode`). On a CPU everything defaults to float32: half precision is
slow there or not implemented for every kernel.

Precedence: `TOONFORGE_DTYPE` (when not `auto`) > the manifest's `backend.dtype` > the family
default. A bfloat16 request on a GPU without bfloat16 (before Ampere) falls back: FLUX to
float32 (float16 is the very thing that fails for it), the others to float16; the reason is
recorded on the task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
# What each family runs in on an accelerator when nothing else is asked for.
ACCELERATOR_DEFAULTS = {
    "sd15": "float16",
    "sdxl": "float16",
    "animatediff": "float16",
    "flux": "bfloat16",
}


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype
    # Why it differs from what was asked (empty when it does not): recorded in debugoutput.
    note: str = ""

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def check_dtype_name(name: str, what: str) -> str:
    if name != "auto" and name not in DTYPES:
        raise ValueError(f"{what}: unknown dtype {name!r}; expected auto or one of {list(DTYPES)}")
    return name


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    # The CPU runs bfloat16 everywhere (slowly without AVX512-BF16/AMX); recent MPS has it.
    return True


def choose_precision(
    family: str,
    device: torch.device,
    setting: str = "auto",
    manifest: str | None = None,
    *,
    bf16: bool | None = None,
) -> Precision:
    """The dtype a tool of `family` runs in on `device`.

    `setting` is TOONFORGE_DTYPE, `manifest` the tool's `backend.dtype` (None: not set);
    `bf16` says whether the device has bfloat16 (None: ask the device).
    """
    asked = setting if setting != "auto" else (manifest or "auto")
    if asked == "auto":
        asked = "float32" if device.type == "cpu" else ACCELERATOR_DEFAULTS.get(family, "float16")
    check_dtype_name(asked, "dtype")
    if asked == "bfloat16" and not (bf16_supported(device) if bf16 is None else bf16):
        if family == "flux":
            return Precision(
                torch.float32,
                f"{device} has no bfloat16 (a GPU before Ampere); FLUX runs in float32 "
                "instead, because it overflows in float16",
            )
        return Precision(
            torch.float16, f"{device} has no bfloat16 (a GPU before Ampere); using float16"
        )
    return Precision(DTYPES[asked])

"""Row independence of the UNet: a row's output does not depend on how many rows share the
call, which is what lets a task's images be the same bytes alone and in a batch. Checked on
the tiny SD 1.5 and SDXL UNets for batches of 2 to 16 rows (a batch of 8 one-sample tasks
with guidance is 16 rows), with one timestep for all rows (the samplers' case) and, for
SDXL, per-row added conditions (each task's pooled text and size ids)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from toonforge.engine.rowwise import rowwise_embeddings
from toonforge.engine.tiny import sdxl as tiny_sdxl
from toonforge.engine.tiny.sd15 import build_tiny_sd15_models
from toonforge.engine.tiny.tokenizer import write_clip_tokenizer

ROWS = [2, 4, 6, 8, 12, 16]


@pytest.fixture(scope="module")
def sd15_unet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("tokenizer")
    write_clip_tokenizer(folder)
    unet = build_tiny_sd15_models(Path(folder))["unet"]
    rowwise_embeddings(unet)
    return unet


@pytest.fixture(scope="module")
def sdxl_unet() -> Any:
    unet = tiny_sdxl._unet(2 * tiny_sdxl.TEXT_DIM, tiny_sdxl.TEXT_DIM + 6 * tiny_sdxl.TIME_DIM)
    rowwise_embeddings(unet)
    return unet


def _inputs(unet: Any, rows: int, tokens: int = 77) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(rows)
    kwargs: dict[str, Any] = {
        "sample": torch.randn(rows, 4, 12, 12, generator=gen),
        "encoder_hidden_states": torch.randn(
            rows, tokens, unet.config.cross_attention_dim, generator=gen
        ),
    }
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * tiny_sdxl.TIME_DIM
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(rows, pooled, generator=gen),
            "time_ids": torch.randint(64, 1024, (rows, 6), generator=gen).float(),
        }
    return kwargs


def _first_rows(kwargs: dict[str, Any], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        out[key] = _first_rows(value, n) if isinstance(value, dict) else value[:n]
    return out


@pytest.mark.parametrize("unet_name", ["sd15_unet", "sdxl_unet"])
def test_each_row_is_the_same_whatever_the_batch(unet_name: str, request: Any) -> None:
    unet = request.getfixturevalue(unet_name)
    for rows in ROWS:
        for tokens in (77, 154):
            kwargs = _inputs(unet, max(ROWS), tokens)
            with torch.no_grad():
                full = unet(timestep=torch.tensor(601), **_first_rows(kwargs, rows)).sample
                pair = unet(timestep=torch.tensor(601), **_first_rows(kwargs, 2)).sample
            assert torch.equal(full[:2], pair), f"{unet_name}: rows of a batch of {rows} differ"

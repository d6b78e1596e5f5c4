"""Prompt -> CLIP embeddings for SD1.x, computed here rather than inside the pipeline.

Three reasons to own this path instead of passing `prompt=` to diffusers:
- clip skip: diffusers 0.42's SD1.5 pipeline reaches for `text_encoder.text_model`, which
  transformers >= 5.6 removed; and it skips layers for the positive prompt only, while
  AUTOMATIC1111 and ComfyUI (whose users write these prompts) apply it to both.
- long prompts: like AUTOMATIC1111, text beyond 75 tokens goes into further 77-token chunks
  whose embeddings are concatenated, instead of being cut off. The CartoonMix negative prompt
  alone needs that: its three textual inversions span about 100 vectors.
- textual inversion: a multi-vector embedding is expanded here from token ids, so a mixed-case
  name such as `EasyNegativeV2` works (diffusers' expansion compares against the lower-cased
  tokens and silently falls back to the first vector), and its vectors are kept in one chunk.
AUTOMATIC1111's weighted syntax, `(word:1.2)`, `[word]`, will be parsed here as well; for now
the text is taken literally.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from toonforge.engine.contract import ModelError

CHUNK_TOKENS = 75  # 77 minus the start and end tokens


@dataclass
class PromptEmbeds:
    positive: torch.Tensor  # [1, 77 * chunks, hidden]
    negative: torch.Tensor  # same shape: the pipeline requires it
    chunks: int
    positive_tokens: int
    negative_tokens: int


def textual_inversion_ids(tokenizer: Any, tokens: Sequence[str]) -> dict[int, list[int]]:
    """For each loaded embedding token: its first id -> all its vector ids, in order.

    diffusers' `load_textual_inversion` adds `tok`, `tok_1`, `tok_2`, ... for a multi-vector
    embedding; the prompt only ever contains `tok`.
    """
    added = tokenizer.get_added_vocab()
    out: dict[int, list[int]] = {}
    for token in tokens:
        if token not in added:
            continue
        ids = [added[token]]
        while f"{token}_{len(ids)}" in added:
            ids.append(added[f"{token}_{len(ids)}"])
        out[ids[0]] = ids
    return out


def _token_groups(
    tokenizer: Any, text: str, embeddings: Mapping[int, list[int]]
) -> list[list[int]]:
    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    # A single id, or all vectors of one textual inversion: a group is never split across
    # chunks unless it is longer than a chunk on its own.
    return [list(embeddings.get(i, [i])) for i in ids]


def _chunk(groups: list[list[int]]) -> list[list[int]]:
    chunks: list[list[int]] = [[]]
    for group in groups:
        if chunks[-1] and len(chunks[-1]) + len(group) > CHUNK_TOKENS:
            chunks.append([])
        for token_id in group:
            if len(chunks[-1]) == CHUNK_TOKENS:
                chunks.append([])
            chunks[-1].append(token_id)
    return chunks


def _window(chunk: list[int], bos: int, eos: int, pad: int) -> list[int]:
    return [bos, *chunk, eos] + [pad] * (CHUNK_TOKENS - len(chunk))


def encode_prompts(
    tokenizer: Any,
    text_encoder: Any,
    prompt: str,
    negative_prompt: str,
    clip_skip: int,
    embeddings: Mapping[int, list[int]] | None = None,
) -> PromptEmbeds:
    """Embeddings for the prompt and the negative prompt, same length, on the encoder's device.

    `clip_skip` has AUTOMATIC1111's meaning: 1 uses the last layer, N uses the output of the
    N-th layer from the end, always through the final layer norm.
    """
    layers = int(text_encoder.config.num_hidden_layers)
    if not 1 <= clip_skip <= layers:
        raise ModelError(f"clipSkip must be between 1 and {layers} for this model, got {clip_skip}")
    embeddings = embeddings or {}
    pos_groups = _token_groups(tokenizer, prompt, embeddings)
    neg_groups = _token_groups(tokenizer, negative_prompt, embeddings)
    pos_chunks, neg_chunks = _chunk(pos_groups), _chunk(neg_groups)
    # The pipeline needs equal shapes for CFG: pad the shorter side with empty chunks, as
    # AUTOMATIC1111 does.
    count = max(len(pos_chunks), len(neg_chunks))
    pos_chunks += [[] for _ in range(count - len(pos_chunks))]
    neg_chunks += [[] for _ in range(count - len(neg_chunks))]

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    windows = [_window(c, bos, eos, pad) for c in pos_chunks + neg_chunks]
    device = text_encoder.device
    input_ids = torch.tensor(windows, dtype=torch.long, device=device)
    # transformers >= 5.6 flattened CLIPTextModel; older versions wrap it in `.text_model`.
    text_model = getattr(text_encoder, "text_model", text_encoder)
    with torch.no_grad():
        out = text_encoder(input_ids, output_hidden_states=True)
        hidden = text_model.final_layer_norm(out.hidden_states[-clip_skip])
    dim = hidden.shape[-1]
    positive = hidden[:count].reshape(1, count * hidden.shape[1], dim)
    negative = hidden[count:].reshape(1, count * hidden.shape[1], dim)
    return PromptEmbeds(
        positive=positive,
        negative=negative,
        chunks=count,
        positive_tokens=sum(len(g) for g in pos_groups),
        negative_tokens=sum(len(g) for g in neg_groups),
    )

"""Weighted prompt fragments -> CLIP embeddings, as AUTOMATIC1111 computes them.

The parsing (emphasis, BREAK, 75-token chunks) is `toonforge.prompts`; this module owns the
tensor side, for SD1.x and for SDXL's two encoders:
- each chunk is encoded as `<start> 75 tokens <end>` padded to 77, and the chunks' hidden
  states are concatenated (prompts are not cut at 77 tokens);
- every token's vector is multiplied by its fragment's weight, then the chunk is rescaled so
  that its mean is what it was before weighting (A1111's default "Original" emphasis);
- textual inversions are expanded here from token ids, so a mixed-case name such as
  `EasyNegativeV2` works (diffusers' own expansion compares lower-cased tokens and silently
  uses the first vector only), and an embedding's vectors stay in one chunk;
- clip skip has A1111's meaning for SD1.x (1 = last layer, always through the final layer
  norm, for the prompt and the negative prompt alike). diffusers 0.42's own clip-skip path
  reaches for `text_encoder.text_model`, which transformers >= 5.6 removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from toonforge.engine.contract import ModelError
from toonforge.prompts import CHUNK_LENGTH, Chunk, chunk_fragments, parse_attention

Fragments = Sequence[tuple[str, float]]


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


def final_norm_layer(text_encoder: Any, clip_skip: int) -> Callable[[Any], torch.Tensor]:
    """SD1.x: the hidden state `clip_skip` layers from the end, through the final layer norm."""
    layers = int(text_encoder.config.num_hidden_layers)
    if not 1 <= clip_skip <= layers:
        raise ModelError(f"clipSkip must be between 1 and {layers} for this model, got {clip_skip}")
    # transformers >= 5.6 flattened CLIPTextModel; older versions wrap it in `.text_model`.
    text_model = getattr(text_encoder, "text_model", text_encoder)
    return lambda out: text_model.final_layer_norm(out.hidden_states[-clip_skip])


def penultimate_layer(out: Any) -> torch.Tensor:
    """SDXL: the penultimate hidden state, without the final layer norm."""
    return out.hidden_states[-2]


@dataclass
class ClipEncoder:
    tokenizer: Any
    text_encoder: Any
    select: Callable[[Any], torch.Tensor]  # encoder output -> hidden states
    embeddings: Mapping[int, list[int]] = field(default_factory=dict)
    pooled: bool = False  # also return the projected pooled output (SDXL's second encoder)

    def groups(self, text: str) -> list[list[int]]:
        ids = self.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)
        return [list(self.embeddings.get(i, [i])) for i in ids.input_ids]

    @property
    def comma_id(self) -> int | None:
        token_id = self.tokenizer.convert_tokens_to_ids(",</w>")
        unk = self.tokenizer.unk_token_id
        return None if token_id is None or token_id == unk else int(token_id)

    def windows(self, chunks: Sequence[Chunk]) -> torch.Tensor:
        tok = self.tokenizer
        bos, eos = tok.bos_token_id, tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        rows = [[bos, *c.tokens, eos] + [pad] * (CHUNK_LENGTH - len(c.tokens)) for c in chunks]
        return torch.tensor(rows, dtype=torch.long, device=self.text_encoder.device)


@dataclass
class EncodedText:
    hidden: torch.Tensor  # [1, 77 * chunks, dim]
    pooled: torch.Tensor | None  # [1, proj dim] for SDXL's second encoder, else None
    chunks: int
    tokens: int  # prompt tokens (embedding vectors counted one by one)


def _emphasis(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's "Original" emphasis, chunk by chunk: multiply each token's vector by its
    weight, then rescale so the chunk's mean is what it was before.

    A1111 divides by the new mean unguarded; where that mean is (nearly) zero, the rescale
    would blow the embedding up to inf/NaN, so the weighted vectors are kept unrescaled there.
    (A layer-normed hidden state with no bias has a zero mean by construction.)
    """
    before = hidden.mean(dim=(1, 2), keepdim=True)
    weighted = hidden * weights.unsqueeze(-1)
    after = weighted.mean(dim=(1, 2), keepdim=True)
    scale = weighted.abs().mean(dim=(1, 2), keepdim=True)
    stable = after.abs() > 1e-3 * scale
    ratio = torch.where(stable, before / torch.where(stable, after, 1.0), 1.0)
    return weighted * ratio


def encode_fragments(encoder: ClipEncoder, fragments: Fragments) -> EncodedText:
    chunks = chunk_fragments(fragments, encoder.groups, comma_id=encoder.comma_id)
    input_ids = encoder.windows(chunks)
    with torch.no_grad():
        out = encoder.text_encoder(input_ids, output_hidden_states=True)
        hidden = encoder.select(out)
        weights = torch.tensor(
            [
                [1.0, *c.multipliers] + [1.0] * (CHUNK_LENGTH + 1 - len(c.multipliers))
                for c in chunks
            ],
            dtype=hidden.dtype,
            device=hidden.device,
        )
        if not torch.all(weights == 1.0):
            hidden = _emphasis(hidden, weights)
    pooled = None
    if encoder.pooled:
        # The pooled vector of the first chunk, as A1111 does for SDXL.
        pooled = out.text_embeds[:1]
    n, length, dim = hidden.shape
    return EncodedText(
        hidden=hidden.reshape(1, n * length, dim),
        pooled=pooled,
        chunks=n,
        tokens=sum(len(c.tokens) for c in chunks),
    )


def pad_chunks(hidden: torch.Tensor, chunks: int, empty: torch.Tensor) -> torch.Tensor:
    """Append encoded empty chunks (`empty`: [1, 77, dim]) until `hidden` has `chunks`."""
    have = hidden.shape[1] // empty.shape[1]
    if have >= chunks:
        return hidden
    return torch.cat([hidden, empty.repeat(1, chunks - have, 1)], dim=1)


@dataclass
class PromptEmbeds:
    positive: torch.Tensor  # [1, 77 * chunks, hidden]
    negative: torch.Tensor  # same shape: classifier-free guidance batches them
    chunks: int
    positive_tokens: int
    negative_tokens: int


def encode_prompts(
    tokenizer: Any,
    text_encoder: Any,
    prompt: str,
    negative_prompt: str,
    clip_skip: int,
    embeddings: Mapping[int, list[int]] | None = None,
) -> PromptEmbeds:
    """SD1.x embeddings of a prompt pair with emphasis and BREAK (no scheduling: see
    `conditioning` for that), padded to the same length as A1111 pads them."""
    encoder = ClipEncoder(
        tokenizer, text_encoder, final_norm_layer(text_encoder, clip_skip), embeddings or {}
    )
    pos = encode_fragments(encoder, parse_attention(prompt))
    neg = encode_fragments(encoder, parse_attention(negative_prompt))
    empty = encode_fragments(encoder, [("", 1.0)]).hidden
    count = max(pos.chunks, neg.chunks)
    return PromptEmbeds(
        positive=pad_chunks(pos.hidden, count, empty),
        negative=pad_chunks(neg.hidden, count, empty),
        chunks=count,
        positive_tokens=pos.tokens,
        negative_tokens=neg.tokens,
    )

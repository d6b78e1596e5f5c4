"""Prompts longer than one CLIP window: AUTOMATIC1111's 75-token chunks, without a tokenizer.

Semantics of AUTOMATIC1111's `FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line`: the
weighted fragments (from `parse_attention`) are tokenized one by one and their tokens fill
chunks of 75 (each chunk is then encoded as `<start> 75 tokens <end>`, padded, and the
chunks' embeddings are concatenated):

- a `BREAK` fragment closes the current chunk (an empty current chunk is kept as an empty
  chunk, so a leading `BREAK` gives a first chunk of padding only, as in A1111);
- when a chunk is full and the last comma in it is at most `comma_backtrack` (A1111 setting
  `comma_padding_backtrack`, default 20) tokens back, the tokens after that comma move to the
  next chunk, so a phrase is not cut in two;
- the vectors of one textual-inversion embedding (a group of several ids) are not split over
  two chunks; one longer than a whole chunk is split (A1111 would overflow the chunk);
- every token carries its fragment's weight; the caller multiplies the encoder's output by
  these weights and, like A1111's default "Original" emphasis, rescales the result so that its
  mean equals the mean before weighting.

The tokenizer is the caller's: `tokenize(text)` returns the fragment's token ids without
start/end tokens, as groups (a group is one id, or all ids of one embedding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from toonforge.prompts.attention import is_break

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20


@dataclass(frozen=True)
class Chunk:
    """Up to `chunk_length` token ids (no start/end/padding) and one weight per id."""

    tokens: tuple[int, ...]
    multipliers: tuple[float, ...]


def chunk_fragments(
    fragments: Sequence[tuple[str, float]],
    tokenize: Callable[[str], Sequence[Sequence[int]]],
    *,
    comma_id: int | None,
    chunk_length: int = CHUNK_LENGTH,
    comma_backtrack: int = COMMA_BACKTRACK,
) -> list[Chunk]:
    """Weighted fragments -> chunks, at least one (an empty prompt is one empty chunk)."""
    if chunk_length < 1:
        raise ValueError("chunk_length must be >= 1")
    chunks: list[Chunk] = []
    tokens: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal tokens, weights, last_comma
        chunks.append(Chunk(tuple(tokens), tuple(weights)))
        tokens, weights, last_comma = [], [], -1

    for fragment in fragments:
        if is_break(fragment):
            close()
            continue
        text, weight = fragment
        for group in tokenize(text):
            ids = list(group)
            if not ids:
                continue
            if len(ids) == 1 and comma_id is not None and ids[0] == comma_id:
                last_comma = len(tokens)
            elif (
                comma_backtrack
                and len(tokens) == chunk_length
                and last_comma != -1
                and len(tokens) - last_comma <= comma_backtrack
            ):
                cut = last_comma + 1
                moved_tokens, moved_weights = tokens[cut:], weights[cut:]
                del tokens[cut:], weights[cut:]
                close()
                tokens, weights = moved_tokens, moved_weights
            if len(tokens) == chunk_length:
                close()
            if len(ids) > 1 and tokens and len(tokens) + len(ids) > chunk_length:
                close()
            for token_id in ids:
                if len(tokens) == chunk_length:  # only for a group longer than a chunk
                    close()
                tokens.append(token_id)
                weights.append(weight)

    if tokens or not chunks:
        close()
    return chunks

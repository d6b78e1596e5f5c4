"""An offline CLIP BPE tokenizer in OpenAI's file layout.

The real CLIP vocabulary cannot be downloaded here, so we learn a few hundred byte-pair merges
from a small built-in corpus (the seed pages' prompts plus common prompt words) and write
`vocab.json` + `merges.txt` exactly as OpenAI's CLIP does: 256 byte symbols, the same with
`</w>`, the learned merges in order, then `<|startoftext|>` and `<|endoftext|>`. Any text still
tokenizes, because every byte has a symbol; words from the corpus just take fewer tokens.
The builder is pure Python (no torch), so it is cheap to import.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import regex

from toonforge.engine.tiny._cache import build_once

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
DEFAULT_MERGES = 400

# Prompts of the seed pages and the words prompt writers use most, so that common prompts
# tokenize into few tokens as they would with the real vocabulary (long prompts then really
# exercise the 77-token window).
CORPUS = """
(masterpiece, top quality, best quality, official art, beautiful and aesthetic:1.2), 1girl,
beautiful, high detailed, purple hair with a hint of pink, pink eyes, dark lighting, serious
face, looking the sky, sky, medium shot, black sweater, jewelry
(((best quality))), pretty 1girl, brown hair, red dress, sat train station platform, at night,
hanging light
a portrait of a giant [seductress|babe], science fiction, [(crNanosuit|War_Glam)::0.5],
[power armor|armor], armored, wearing breastplate, perfect face, pretty face, purple eyes,
purple hair, very short hair, lush detail, absurdres
Best quality, masterpiece, ultra high res, (photorealistic:1.4), raw photo, Kodak portra 400,
film grain, aki001, extremely detailed CG unity 8k wallpaper, noon, beautiful detailed water,
long black hair, beautiful detailed girl, serafuku, view straight on, eyeball, hair flower,
close up
a cartoon image of a woman holding a candle and a lamp, a young female wizard, she is in the
potions workshop, female wizard, a beautiful female wizard, aesthetic, female genie, female
gnome artificer, an alchemist gnome, muscular female gnome engineer, beautiful full body
concept art, maya ali sorcerer, female dwarven noblewoman, gnome, spirit fantasy concept art,
splashscreen character art, blue tunic and robes, female mage, portrait female elf wizard,
render of mirabel madrigal, dota, gandalf as a woman, alchemist girl, epic mage girl character,
(((mad))) elf princess, dnd dwarf, female mage, fantasy character, disney concept art,
beautiful character painting, gnome druid, beautiful elf with ornate robes, themed robes and hat
bad-hands-5 EasyNegativeV2 ng_deepnegative_v1_75t
w1z_r3nd3r, a potato with face and hands is holding a sign with text "STOP" next to a package
of french fries, protesting on a street, performing on a theater stage, holding up a contract,
a red robot, a pig in heavy makeup wearing a crop top, shopping for groceries, vibrant colors,
glossy texture, high gloss, working as janitor, a lemon with a face, sleek studio portrait of a
humanoid robot, old wizard with a long white beard, small body and a large head, big eyes,
reading a book, a broccoli with a face, veterinarian
retro cartoon, comic book style, animation, batman, superhero, city at night, rain, neon
a cat walking on the beach at sunset, waves, clouds, ocean, dog, forest, mountains, river,
snow, flowers, garden, castle, dragon, knight, astronaut, space, stars, moon, sun, smiling,
man, boy, child, old, young, cute, happy, sad, anime, pixar, 3d render, illustration, sketch,
watercolor, oil painting, photograph, cinematic lighting, soft light, depth of field, bokeh,
highly detailed, sharp focus, 4k, hdr, trending on artstation, lowres, bad anatomy, bad hands,
text, error, missing fingers, extra digit, fewer digits, cropped, worst quality, low quality,
normal quality, jpeg artifacts, signature, watermark, username, blurry, ugly, deformed
"""

# OpenAI CLIP's pre-tokenizer pattern (digits split one by one).
_WORD_RE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _words(text: str) -> list[tuple[str, ...]]:
    table = bytes_to_unicode()
    text = " ".join(text.split()).lower()
    out = []
    for word in _WORD_RE.findall(text):
        symbols = [table[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        out.append(tuple(symbols))
    return out


def learn_merges(corpus: str, n_merges: int) -> list[tuple[str, str]]:
    """Classic BPE training; ties broken lexicographically so the result is deterministic."""
    words = Counter(_words(corpus))
    merges: list[tuple[str, str]] = []
    seen = set(bytes_to_unicode().values())
    seen |= {s + "</w>" for s in seen}
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, freq in words.items():
            for pair in pairwise(word):
                pairs[pair] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merged = best[0] + best[1]
        new_words: Counter[tuple[str, ...]] = Counter()
        for word, freq in words.items():
            new_words[_merge_word(word, best, merged)] += freq
        words = new_words
        # Two merge orders can spell the same symbol; the vocabulary must stay unique.
        if merged not in seen:
            seen.add(merged)
            merges.append(best)
    return merges


def _merge_word(word: tuple[str, ...], pair: tuple[str, str], merged: str) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def write_clip_tokenizer(
    folder: Path, corpus: str = CORPUS, n_merges: int = DEFAULT_MERGES
) -> None:
    """Write vocab.json, merges.txt and the tokenizer configs into `folder`."""
    merges = learn_merges(corpus, n_merges)
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab_list += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def special_token_ids(folder: Path) -> dict[str, int]:
    """Ids to copy into `CLIPTextConfig` (bos/eos/pad) and the vocabulary size."""
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    return {
        "vocab_size": len(vocab),
        "bos_token_id": vocab[BOS],
        "eos_token_id": vocab[EOS],
        "pad_token_id": vocab[EOS],
    }


def ensure_tiny_clip_tokenizer(root: Path) -> Path:
    """The tokenizer folder under `root`, built on first use."""
    return build_once(root / "clip-tokenizer-v1", write_clip_tokenizer)

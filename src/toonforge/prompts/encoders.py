"""FLUX prompts: one text per text encoder, from a JSON object or a plain string.

The Toon-Renders examples send `{"T5": "...", "CLIP-L": "..."}`: the T5 text goes to FLUX's
T5 encoder (diffusers' `prompt_2`) and the CLIP-L text to its CLIP encoder (`prompt`). Pure
Python, so that Run can refuse a malformed object before anything is queued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from toonforge.prompts.attention import PromptError

JSON_PROMPT_KEYS = ("T5", "CLIP-L")


@dataclass(frozen=True)
class EncoderPrompts:
    clip: str  # diffusers' `prompt`
    t5: str  # diffusers' `prompt_2`
    json: bool  # came from a {"T5": ..., "CLIP-L": ...} object

    def describe(self) -> dict[str, Any]:
        how = "JSON prompt" if self.json else "plain prompt (same text to both encoders)"
        return {"CLIP-L": self.clip, "T5": self.t5, "source": how}


def split_encoder_prompt(name: str, text: str) -> EncoderPrompts:
    """`{"T5": ..., "CLIP-L": ...}` -> one text per encoder; any other string -> both.

    With only one of the two keys, the other encoder gets the same text. A JSON object with
    either key whose values are not strings is an error naming `name`.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and any(k in doc for k in JSON_PROMPT_KEYS):
            for key in JSON_PROMPT_KEYS:
                if key in doc and not isinstance(doc[key], str):
                    raise PromptError(
                        f"{name}: the JSON prompt's {key!r} value must be a string, "
                        f"got {type(doc[key]).__name__}"
                    )
            t5 = doc.get("T5", doc.get("CLIP-L"))
            clip = doc.get("CLIP-L", doc.get("T5"))
            return EncoderPrompts(clip=clip, t5=t5, json=True)
    return EncoderPrompts(clip=text, t5=text, json=False)

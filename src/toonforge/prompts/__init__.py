"""AUTOMATIC1111's prompt language, pure Python (no torch, no tokenizer).

- `split_and(prompt)`: `AND` composition, `[(part, weight), ...]`.
- `schedule(text, steps)`: prompt editing `[from:to:when]` and alternation `[a|b]`,
  `[(end_step, text), ...]`.
- `parse_attention(text)`: emphasis `(a)`, `(a:1.3)`, `[a]`, escapes, `BREAK`,
  `[(fragment, weight), ...]`.
- `plan(prompt, steps, negative=False)`: all three, as a `PromptPlan`.
- `chunk_fragments(fragments, tokenize, comma_id=...)`: 75-token chunks for long prompts.

Each module's docstring states the rules; they are those of AUTOMATIC1111's
`modules/prompt_parser.py` (current scheduling) and `sd_hijack_clip.py`.
"""

from toonforge.prompts.attention import (
    BREAK,
    BREAK_WEIGHT,
    PromptError,
    is_break,
    parse_attention,
)
from toonforge.prompts.chunking import CHUNK_LENGTH, COMMA_BACKTRACK, Chunk, chunk_fragments
from toonforge.prompts.composition import split_and
from toonforge.prompts.explain import explain_text
from toonforge.prompts.plan import PlanPart, PromptPlan, ScheduledText, plan
from toonforge.prompts.scheduling import schedule

__all__ = [
    "BREAK",
    "BREAK_WEIGHT",
    "CHUNK_LENGTH",
    "COMMA_BACKTRACK",
    "Chunk",
    "PlanPart",
    "PromptError",
    "PromptPlan",
    "ScheduledText",
    "chunk_fragments",
    "explain_text",
    "is_break",
    "parse_attention",
    "plan",
    "schedule",
    "split_and",
]

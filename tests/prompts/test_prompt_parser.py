"""toonforge.prompts against AUTOMATIC1111's own documented examples (the doctests of
modules/prompt_parser.py, current scheduling) and the rules around them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from toonforge.prompts import (
    BREAK,
    Chunk,
    PromptError,
    chunk_fragments,
    parse_attention,
    plan,
    schedule,
    split_and,
)

A, B = "a", "(b:1.1)"

# A1111 doctests of get_learned_conditioning_prompt_schedules([p], 10)[0], as (end, text).
SCHEDULE_DOCTESTS = [
    ("test", [(10, "test")]),
    ("a [b:3]", [(3, "a "), (10, "a b")]),
    ("a [b: 3]", [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", [(10, "a [unbalanced")]),
    ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[a|(b:1.1)]", [(i, A if i % 2 else B) for i in range(1, 11)]),
    ("[fe|]male", [(i, "female" if i % 2 else "male") for i in range(1, 11)]),
    ("[fe|||]male", [(i, "female" if i % 4 == 1 else "male") for i in range(1, 11)]),
]


@pytest.mark.parametrize(("prompt", "expected"), SCHEDULE_DOCTESTS)
def test_schedule_matches_a1111_doctests(prompt: str, expected: list[tuple[int, str]]) -> None:
    assert schedule(prompt, 10) == expected


def test_stale_upstream_doctest_follows_upstream_code() -> None:
    # A1111's docstring says [[5, 'a  c'], [10, 'a {b|d{ c']] "# not handling this right now",
    # but its grammar excludes '|' from plain text, so its own code fails to parse this prompt
    # and uses it literally. We follow the code.
    assert schedule("a [{b|d{:.5] c", 10) == [(10, "a [{b|d{:.5] c")]


def test_schedule_header_example_100_steps() -> None:
    # The example in the comment at the top of A1111's prompt_parser.py.
    prompt = (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
        "[ in foreground::0.6][: in background:0.25] [shoddy:masterful:0.5]"
    )
    assert schedule(prompt, 100) == [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]


@pytest.mark.parametrize(
    ("prompt", "steps", "expected"),
    [
        ("[a:b:0.5]", 20, [(10, "a"), (20, "b")]),
        ("[a:b:0.5]", 7, [(3, "a"), (7, "b")]),  # 3.5 truncated
        ("[a:b:5]", 3, [(3, "a")]),  # when capped at steps: 'b' never comes
        ("[a:b:0]", 10, [(10, "b")]),  # when < 1: 'b' from the first step
        ("[a:b:1.0]", 10, [(10, "a")]),  # '1.0' is a fraction: all the steps
        ("[a:b:1]", 10, [(1, "a"), (10, "b")]),  # '1' is a step number
        ("[[a:b:1]:c:2]", 10, [(1, "a"), (2, "b"), (10, "c")]),
        ("[a|b|c]", 5, [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "b")]),
        ("[a|b] [c:d:2]", 3, [(1, "a c"), (2, "b c"), (3, "a d")]),
        ("a|b", 4, [(4, "a|b")]),  # '|' outside brackets: not parsed, taken literally
        ("((a))", 10, [(10, "((a))")]),  # emphasis is left for parse_attention
    ],
)
def test_schedule_rules(prompt: str, steps: int, expected: list[tuple[int, str]]) -> None:
    assert schedule(prompt, steps) == expected


def test_schedule_rejects_bad_steps() -> None:
    with pytest.raises(ValueError, match="steps"):
        schedule("a", 0)


# A1111 doctests of parse_prompt_attention.
ATTENTION_DOCTESTS = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), ATTENTION_DOCTESTS)
def test_attention_matches_a1111_doctests(text: str, expected: list[tuple[str, float]]) -> None:
    # Exact float equality: the order of the multiplications is A1111's.
    assert parse_attention(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("((a))", [("a", 1.1 * 1.1)]),
        ("(a:1.3)", [("a", 1.3)]),
        ("[a]", [("a", 1 / 1.1)]),
        ("[[a]]", [("a", 1 / 1.1 / 1.1)]),
        ("((a:1.2):1.5)", [("a", 1.2 * 1.5)]),  # explicit weights nest and multiply
        ("(a: 0.5 )", [("a", 0.5)]),
        ("a \\\\ b", [("a \\ b", 1.0)]),  # \\ is one backslash
        ("a \\x", [("a x", 1.0)]),  # a lone backslash disappears
        ("a) b]", [("a) b]", 1.0)]),  # closing brackets with nothing open are text
        ("a:b", [("a:b", 1.0)]),
        ("", [("", 1.0)]),
        ("a BREAK b", [("a", 1.0), (BREAK, -1.0), ("b", 1.0)]),
        ("BREAKFAST", [("BREAKFAST", 1.0)]),  # a whole word only
        ("(a BREAK b)", [("a", 1.1), (BREAK, -1.1), ("b", 1.1)]),  # A1111: no chunk break
        ("(masterpiece:1.2), 1girl", [("masterpiece", 1.2), (", 1girl", 1.0)]),
    ],
)
def test_attention_rules(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(text) == expected


def test_attention_bad_weight_is_an_error() -> None:
    # A1111's float() fails on it and the generation fails; so do we, with a clear message.
    with pytest.raises(PromptError, match=r"'1\.2\.3'.*not a number"):
        parse_attention("(a:1.2.3)")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a cat AND a dog:0.5", [("a cat", 1.0), (" a dog", 0.5)]),
        ("a AND b : 1.2 AND c:-0.3 ", [("a", 1.0), (" b", 1.2), (" c", -0.3)]),
        ("BRAND and ANDROID", [("BRAND and ANDROID", 1.0)]),
        ("(x:1.2)", [("(x:1.2)", 1.0)]),  # ')' at the end: an emphasis, not a part weight
        ("x:.5", [("x", 0.5)]),
    ],
)
def test_split_and(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert split_and(prompt) == expected


def test_plan_and_parts_schedules_and_fragments() -> None:
    p = plan("a [cat:dog:0.5] ((sky)) AND [red|blue] car:0.7", 4)
    assert [(part.text, part.weight) for part in p.parts] == [
        ("a [cat:dog:0.5] ((sky))", 1.0),
        (" [red|blue] car", 0.7),
    ]
    first = p.parts[0].schedule
    assert [(s.end_step, s.text) for s in first] == [(2, "a cat ((sky))"), (4, "a dog ((sky))")]
    assert first[1].fragments == [("a dog ", 1.0), ("sky", 1.1 * 1.1)]
    assert p.texts_at(1) == [("a cat ((sky))", 1.0), (" red car", 0.7)]
    assert p.texts_at(2) == [("a cat ((sky))", 1.0), (" blue car", 0.7)]
    assert p.texts_at(3) == [("a dog ((sky))", 1.0), (" red car", 0.7)]
    assert p.texts_at(4) == [("a dog ((sky))", 1.0), (" blue car", 0.7)]
    assert not p.is_static
    assert p.texts() == ["a cat ((sky))", "a dog ((sky))", " red car", " blue car"]
    d = p.to_dict()
    assert d["steps"] == 4 and d["negative"] is False
    assert [(s["start_step"], s["end_step"]) for s in d["parts"][0]["schedule"]] == [
        (1, 2),
        (3, 4),
    ]


def test_plan_lookup_like_a1111_sampler() -> None:
    # A1111's CFGDenoiser counts calls from 0 and picks the first segment with
    # call <= end_at_step (reconstruct_multicond_batch).
    p = plan("[a:b:5] AND [x|y]", 10)
    calls = [p.texts_at_a1111_call(i) for i in range(10)]
    assert [texts[0][0] for texts in calls] == ["a"] * 6 + ["b"] * 4
    assert "".join(texts[1][0] for texts in calls) == " x x y x y x y x y x"
    # Beyond the schedule (more calls than steps) A1111 falls back to the first segment.
    assert p.texts_at_a1111_call(11)[0][0] == "a"
    assert p.parts[0].applied_steps() == [(1, 6), (7, 10)]
    assert p.parts[1].applied_steps()[:3] == [(1, 2), (3, 3), (4, 4)]
    assert p.parts[1].applied_steps()[-1] is None  # starts at the last step: never used
    # texts_at: 1-based steps as in the doctests, last segment beyond the end.
    assert [p.texts_at(i)[0][0] for i in range(1, 11)] == ["a"] * 5 + ["b"] * 5
    assert p.texts_at(11)[0][0] == "b"


def test_plan_negative_is_not_split_on_and() -> None:
    p = plan("ugly AND blurry:0.5", 10, negative=True)
    assert len(p.parts) == 1
    assert (p.parts[0].weight, p.parts[0].text) == (1.0, "ugly AND blurry:0.5")
    assert p.is_static


def test_plan_notes_literal_prompt_and_break_in_brackets() -> None:
    notes = plan("a|b, (x BREAK y)", 5).notes
    assert any("used literally" in n for n in notes)
    assert any("used literally" in n for n in plan("[a|b:0.5]", 5).notes)
    assert any("BREAK inside brackets" in n for n in notes)
    assert plan("a, b BREAK c", 5).notes == []
    # A1111's parser quirk: a group followed by two loose brackets is read literally.
    assert schedule("[a:b:2]((", 3) == [
        (3, "[a:b:2](("),
    ]
    assert any("[a:b:2] in" in n for n in plan("[a:b:2]((", 3).notes)
    assert plan("[a:b:2](", 3).notes == []


def test_package_imports_neither_torch_nor_a_tokenizer() -> None:
    code = (
        "import sys, toonforge.prompts as p; p.plan('[a|b] (c:1.2) AND d', 3); "
        "bad = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- 75-token chunks (A1111 tokenize_line), with a toy word tokenizer --------------------

COMMA = 0


def words(text: str) -> list[list[int]]:
    """One id per word (its length + 1), a comma is COMMA; 'EMB' is a 3-vector embedding."""
    out: list[list[int]] = []
    for word in text.replace(",", " , ").split():
        if word == ",":
            out.append([COMMA])
        elif word == "EMB":
            out.append([901, 902, 903])
        else:
            out.append([len(word) + 1])
    return out


def test_chunks_short_prompt_and_weights() -> None:
    chunks = chunk_fragments(parse_attention("a (bb:1.5) c"), words, comma_id=COMMA)
    assert chunks == [Chunk((2, 3, 2), (1.0, 1.5, 1.0))]


def test_chunks_empty_prompt_is_one_empty_chunk() -> None:
    assert chunk_fragments(parse_attention(""), words, comma_id=COMMA) == [Chunk((), ())]


def test_chunks_break_starts_a_new_chunk() -> None:
    chunks = chunk_fragments(parse_attention("a BREAK bb"), words, comma_id=COMMA)
    assert [c.tokens for c in chunks] == [(2,), (3,)]
    # A leading BREAK keeps an empty first chunk, as in A1111.
    chunks = chunk_fragments(parse_attention("BREAK a"), words, comma_id=COMMA)
    assert [c.tokens for c in chunks] == [(), (2,)]


def test_chunks_long_prompt_splits_at_75() -> None:
    chunks = chunk_fragments([("a " * 80, 1.0)], words, comma_id=None)
    assert [len(c.tokens) for c in chunks] == [75, 5]


def test_chunks_comma_backtrack() -> None:
    # 70 words, a comma, 10 words: the chunk fills at 75 with the comma 4 tokens back, so the
    # 4 words after the comma move to the second chunk.
    text = "a " * 70 + ", " + "bb " * 10
    chunks = chunk_fragments([(text, 1.0)], words, comma_id=COMMA)
    assert [len(c.tokens) for c in chunks] == [71, 10]
    assert chunks[0].tokens[-1] == COMMA
    # The comma too far back (more than 20 tokens): no backtrack.
    text = "a " * 50 + ", " + "bb " * 40
    chunks = chunk_fragments([(text, 1.0)], words, comma_id=COMMA)
    assert [len(c.tokens) for c in chunks] == [75, 16]
    # Backtrack disabled.
    text = "a " * 70 + ", " + "bb " * 10
    chunks = chunk_fragments([(text, 1.0)], words, comma_id=COMMA, comma_backtrack=0)
    assert [len(c.tokens) for c in chunks] == [75, 6]


def test_chunks_keep_an_embedding_in_one_chunk() -> None:
    chunks = chunk_fragments([("a " * 73 + "EMB", 1.0)], words, comma_id=COMMA)
    assert [len(c.tokens) for c in chunks] == [73, 3]
    assert chunks[1].tokens == (901, 902, 903)


# --- long prompts: parsed in pieces, same result as one whole parse ------------------------


def test_long_prompt_pieces_match_the_whole_parse() -> None:
    import toonforge.prompts.scheduling as scheduling

    unit = "((x:1.2)) [a|b], [c:d:0.5] (e) \\(f\\) g:h, "
    prompt = unit * 4  # 56 structural characters: above the whole-parse limit
    assert sum(prompt.count(c) for c in "[]():") > scheduling.WHOLE_PARSE_LIMIT
    pieces = scheduling._pieces(prompt, scheduling.PIECE_SIZE)
    assert pieces is not None and len(pieces) > 3 and "".join(pieces) == prompt
    by_pieces = schedule(prompt, 6)
    assert len(by_pieces) == 6
    assert by_pieces[0] == (1, "((x:1.2)) a, c (e) \\(f\\) g:h, " * 4)
    assert by_pieces[-1] == (6, "((x:1.2)) b, d (e) \\(f\\) g:h, " * 4)
    # The same as parsing it whole (what A1111 does).
    whole = [
        (end, scheduling._text_at(scheduling.parse_tree(prompt), end, 6))
        for end in scheduling._change_steps(scheduling.parse_tree(prompt), 6)
    ]
    assert whole == by_pieces


def test_long_prompts_stay_fast_and_a_giant_group_is_refused() -> None:
    import time

    started = time.monotonic()
    assert len(schedule("[a|b] ((x:1.2)) " * 60, 20)) == 20
    assert schedule("(" * 300 + "[" * 300, 20) == [(20, "(" * 300 + "[" * 300)]
    assert time.monotonic() - started < 20  # one whole Earley parse of these takes minutes
    with pytest.raises(PromptError, match="bracket group"):
        schedule("(" + "((x:1.2)) [a|b] " * 40 + ")", 20)

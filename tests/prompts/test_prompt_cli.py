"""`toonforge prompt explain`, through the real console script and through main()."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toonforge.cli.main import main

# The CartoonMix page's default prompt.
CARTOONMIX = (
    "(masterpiece, top quality, best quality, official art, beautiful and aesthetic:1.2), "
    "1girl, beautiful, high detailed, purple hair with a hint of pink, pink eyes, dark lighting, "
    "serious face, looking the sky, sky, medium shot, black sweater, jewelry"
)
# One of the page's parameter inspirations. Its '|' inside (...) inside [...] is outside
# A1111's grammar, so A1111 uses the whole prompt literally: no alternation at all.
INSPIRATION = (
    "a nude portrait of a giant [seductress|babe] , science fiction, "
    "[(crNanosuit|War_Glam)::0.5], [power armor|armor] ,armored"
)
# The same ideas in a form A1111 does schedule.
SCHEDULED = "a giant [seductress|babe], [(crNanosuit):War_Glam:0.5], [power armor|armor], armored"
CONSOLE_SCRIPT = Path(sys.executable).with_name("toonforge")


def run_script(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONSOLE_SCRIPT), "prompt", "explain", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_console_script_cartoonmix_human_and_json() -> None:
    human = run_script(CARTOONMIX)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert "20 steps, 1 AND part" in lines  # --steps defaults to 20
    assert any(line.startswith("part 1/1  weight 1  ") for line in lines)
    assert any(line.startswith("  steps 1-20: ") for line in lines)
    weights = [line.split(maxsplit=1) for line in lines if line.startswith("    ")]
    assert weights == [
        ["1.2", '"masterpiece, top quality, best quality, official art, beautiful and aesthetic"'],
        ["1", json.dumps(CARTOONMIX.split(":1.2)", 1)[1])],
    ]

    as_json = run_script(CARTOONMIX, "--steps", "30", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["steps"] == 30 and data["negative"] is False and data["notes"] == []
    (part,) = data["parts"]
    assert part["weight"] == 1.0 and part["text"] == CARTOONMIX
    (segment,) = part["schedule"]
    assert (segment["start_step"], segment["end_step"], segment["text"]) == (1, 30, CARTOONMIX)
    assert [(f["text"][:11], f["weight"], f["break"]) for f in segment["fragments"]] == [
        ("masterpiece", 1.2, False),
        (", 1girl, be", 1.0, False),
    ]


def test_console_script_reads_stdin_and_rejects_bad_steps() -> None:
    done = run_script("-", "--steps", "2", "--json", stdin="[a|b]\n")
    assert done.returncode == 0, done.stderr
    texts = [s["text"] for s in json.loads(done.stdout)["parts"][0]["schedule"]]
    assert texts == ["a", "b"]

    bad = run_script("a cat", "--steps", "0")
    assert bad.returncode != 0
    assert "--steps" in bad.stderr and bad.stdout == ""


def test_scheduled_alternating_prompt_human(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", "explain", SCHEDULED, "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "the conditioning changes during sampling" in out
    segments = [line for line in out.splitlines() if line.startswith("  step")]
    # With the sampler steps that use each text (A1111's 0-based step counter).
    assert segments == [
        '  step 1 [sampler steps 1-2]: "a giant seductress, (crNanosuit), power armor, armored"',
        '  step 2 [sampler step 3]: "a giant babe, (crNanosuit), armor, armored"',
        '  step 3 [sampler step 4]: "a giant seductress, War_Glam, power armor, armored"',
        '  step 4 [never used]: "a giant babe, War_Glam, armor, armored"',
    ]
    assert '      1.1  "crNanosuit"' in out  # the emphasis inside the prompt editing
    assert "note:" not in out


def test_unparsable_page_prompt_is_literal_and_noted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", "explain", INSPIRATION, "--steps", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (segment,) = data["parts"][0]["schedule"]
    assert (segment["end_step"], segment["text"]) == (4, INSPIRATION)
    assert any("used literally" in note for note in data["notes"])


def test_and_break_and_negative_json(capsys: pytest.CaptureFixture[str]) -> None:
    prompt = "a [cat:dog:0.5] BREAK ((sky)) AND red car:0.7"
    assert main(["prompt", "explain", prompt, "--steps", "10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(p["weight"], p["text"]) for p in data["parts"]] == [
        (1.0, "a [cat:dog:0.5] BREAK ((sky))"),
        (0.7, " red car"),
    ]
    first = data["parts"][0]["schedule"]
    assert [(s["start_step"], s["end_step"], s["text"], s["applied_steps"]) for s in first] == [
        (1, 5, "a cat BREAK ((sky))", [1, 6]),
        (6, 10, "a dog BREAK ((sky))", [7, 10]),
    ]
    fragments = [(f["text"], f["weight"], f["break"]) for f in first[0]["fragments"]]
    assert fragments == [
        ("a cat", 1.0, False),
        ("BREAK", -1.0, True),
        ("", 1.0, False),
        ("sky", 1.1 * 1.1, False),
    ]

    assert main(["prompt", "explain", prompt, "--negative", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["negative"] is True and len(data["parts"]) == 1

    assert main(["prompt", "explain", prompt, "--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "part 2/2  weight 0.7" in out
    assert "BREAK (a new 75-token chunk starts here)" in out
    assert '     1.21  "sky"' in out


def test_bad_weight_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", "explain", "(a:1.2.3)"]) == 1
    err = capsys.readouterr().err
    assert "1.2.3" in err and "not a number" in err

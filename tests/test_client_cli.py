"""The people's commands without a server: credentials, inputs, every option's help, and the
key commands (`keys list | revoke | rotate`) on a database of the test's own."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support import base_env
from toonforge.cli.credentials import DEFAULT_URL, CredentialsError, resolve
from toonforge.cli.main import build_parser, main
from toonforge.cli.run_cmd import parse_inputs

PROFILES = """
[default]
api_key = "default-key"
api_secret = "default-secret"

[lab]
url = "http://lab.example:9000/v1"
api_key = "lab-key"
"""


@pytest.fixture
def creds_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("TOONFORGE_API_KEY", "TOONFORGE_API_SECRET", "TOONFORGE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "credentials.toml"
    monkeypatch.setenv("TOONFORGE_CREDENTIALS_FILE", str(path))
    return path


def test_credentials_from_profiles_and_environment(
    creds_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CredentialsError, match="TOONFORGE_API_KEY"):
        resolve()
    creds_file.write_text(PROFILES)
    default = resolve()
    assert (default.url, default.api_key, default.api_secret) == (
        DEFAULT_URL,
        "default-key",
        "default-secret",
    )
    lab = resolve("lab")
    assert (lab.url, lab.api_key, lab.api_secret) == ("http://lab.example:9000/v1", "lab-key", None)
    with pytest.raises(CredentialsError, match=r"no profile \[nope\]"):
        resolve("nope")
    monkeypatch.setenv("TOONFORGE_API_KEY", "env-key")
    monkeypatch.setenv("TOONFORGE_URL", "http://env.example/v1")
    env = resolve()
    assert (env.url, env.api_key, env.api_secret) == ("http://env.example/v1", "env-key", None)
    assert resolve("lab").api_key == "lab-key", "--profile wins over the environment"
    assert resolve(url="http://other/v1").url == "http://other/v1"
    creds_file.write_text("[default\n")
    monkeypatch.delenv("TOONFORGE_API_KEY")
    with pytest.raises(CredentialsError, match="cannot read"):
        resolve()


def test_inputs_are_text_or_json() -> None:
    assert parse_inputs(["prompt=a cat, smiling", "samples=2", "seed:=7", "x=a=b"]) == {
        "prompt": "a cat, smiling",
        "samples": "2",
        "seed": 7,
        "x": "a=b",
    }
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        parse_inputs(["prompt"])
    with pytest.raises(SystemExit, match="not JSON"):
        parse_inputs(["seed:=seven"])


def _parsers(
    parser: argparse.ArgumentParser, name: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                found += _parsers(sub, f"{name} {sub_name}")
    return found


def test_every_option_has_help() -> None:
    missing = [
        f"{name}: {action.option_strings or action.dest}"
        for name, parser in _parsers(build_parser(), "toonforge")
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
        and not action.help
    ]
    assert missing == []


def test_client_command_without_credentials_says_what_to_set(
    creds_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit, match="TOONFORGE_API_KEY"):
        main(["tasks", "list"])


def test_keys_list_revoke_rotate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOONFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TOONFORGE_DATABASE_URL", raising=False)
    made = []
    for name in ("acme", "lab", "lab"):
        assert main(["keys", "create", "--name", name, "--json"]) == 0
        made.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    for creds in made:
        assert f"{creds['apikey'][:8]}…" in listing
        assert creds["apikey"] not in listing and creds["apisecret"] not in listing
    rows = [line.split("\t") for line in listing.splitlines()[1:]]
    assert [r[:2] for r in rows] == [["1", "acme"], ["2", "lab"], ["3", "lab"]]

    # By name (unique), by the prefix `keys list` shows, by id; an ambiguous name is refused.
    assert main(["keys", "revoke", "acme"]) == 0
    assert main(["keys", "revoke", "lab"]) == 1
    assert "several projects" in capsys.readouterr().out
    assert main(["keys", "revoke", rows[1][2]]) == 0
    assert "project 2 (lab): key revoked" in capsys.readouterr().out
    assert main(["keys", "list"]) == 0
    states = [line.split("\t")[4] for line in capsys.readouterr().out.splitlines()[1:]]
    assert states == ["revoked", "revoked", "active"]

    assert main(["keys", "rotate", "3", "--json"]) == 0
    rotated = json.loads(capsys.readouterr().out.strip())
    assert rotated["apikey"] == made[2]["apikey"]
    assert rotated["apisecret"] != made[2]["apisecret"] and len(rotated["apisecret"]) == 32
    assert main(["keys", "rotate", "nobody"]) == 1


def test_admin_commands_print_no_migration_logs(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", None)
    out = subprocess.run(
        [sys.executable, "-m", "toonforge", "keys", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "no projects yet" in out.stdout
    assert out.stderr == ""


def test_the_client_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, toonforge.client; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'sqlalchemy', 'fastapi', 'starlette', 'alembic') "
        "or (m.startswith('toonforge.') and not m.startswith('toonforge.client'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

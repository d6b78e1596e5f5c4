"""Where `toonforge run` and `toonforge tasks` find the server and the project's keys.

In order: the profile named by `--profile` (from the credentials file); else the
environment (`TOONFORGE_API_KEY`, `TOONFORGE_API_SECRET`, `TOONFORGE_URL`); else the
file's `default` profile. `--url` wins over all of them for the server's address.

The credentials file is `$XDG_CONFIG_HOME/toonforge/credentials.toml` (by default
`~/.config/toonforge/credentials.toml`), or the file `TOONFORGE_CREDENTIALS_FILE` names:

    [default]
    url = "http://127.0.0.1:8000/v1"
    api_key = "..."
    api_secret = "..."      # leave out for a key-only project
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000/v1"


class CredentialsError(Exception):
    pass


@dataclass(frozen=True)
class Credentials:
    url: str
    api_key: str
    api_secret: str | None
    source: str  # where they were found, for messages


def credentials_file() -> Path:
    named = os.environ.get("TOONFORGE_CREDENTIALS_FILE")
    if named:
        return Path(named).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "toonforge" / "credentials.toml"


def _profiles(path: Path) -> dict[str, dict[str, object]]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CredentialsError(f"cannot read the credentials file {path}: {exc}") from exc
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def _from_profile(name: str, profile: dict[str, object], path: Path) -> Credentials:
    key = str(profile.get("api_key") or "")
    if not key:
        raise CredentialsError(f"profile [{name}] in {path} has no api_key")
    secret = str(profile.get("api_secret") or "") or None
    url = str(profile.get("url") or os.environ.get("TOONFORGE_URL") or DEFAULT_URL)
    return Credentials(url, key, secret, f"profile [{name}] of {path}")


def resolve(profile: str | None = None, url: str | None = None) -> Credentials:
    path = credentials_file()
    found: Credentials | None = None
    if profile:
        profiles = _profiles(path)
        if profile not in profiles:
            raise CredentialsError(f"no profile [{profile}] in {path}")
        found = _from_profile(profile, profiles[profile], path)
    elif os.environ.get("TOONFORGE_API_KEY"):
        found = Credentials(
            os.environ.get("TOONFORGE_URL") or DEFAULT_URL,
            os.environ["TOONFORGE_API_KEY"],
            os.environ.get("TOONFORGE_API_SECRET") or None,
            "the environment",
        )
    else:
        profiles = _profiles(path)
        if "default" in profiles:
            found = _from_profile("default", profiles["default"], path)
    if found is None:
        raise CredentialsError(
            "no API key: set TOONFORGE_API_KEY (and TOONFORGE_API_SECRET for a signature "
            f"project), or write a [default] profile in {path}"
        )
    if url:
        found = Credentials(url, found.api_key, found.api_secret, found.source)
    return found

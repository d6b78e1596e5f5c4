"""Settings from command-line flags, passed on to child processes through the environment."""

from __future__ import annotations

import argparse
import os

from toonforge.settings import Settings, load_settings

_FLAG_TO_ENV = {
    "data_dir": "TOONFORGE_DATA_DIR",
    "database_url": "TOONFORGE_DATABASE_URL",
    "tiny": "TOONFORGE_TINY",
    "host": "TOONFORGE_HOST",
    "port": "TOONFORGE_PORT",
    "workers": "TOONFORGE_WORKERS",
    "device": "TOONFORGE_DEVICE",
}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags win over the environment; they are written back to os.environ so that worker
    processes started from here read the same settings."""
    for flag, env in _FLAG_TO_ENV.items():
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[env] = str(value).lower() if isinstance(value, bool) else str(value)
    return load_settings()

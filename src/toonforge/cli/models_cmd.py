"""`toonforge models status | pull` (filled in once the engine's weight resolver lands)."""

from __future__ import annotations

import argparse


def status(args: argparse.Namespace) -> int:
    raise NotImplementedError


def pull(args: argparse.Namespace) -> int:
    raise NotImplementedError

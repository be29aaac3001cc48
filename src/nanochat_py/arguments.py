"""The command line's parser and value types: every bad flag is one line, `nanochat-py: error: ...`, exit code 2.

The ranges are the server's (server/schemas.py), so a value the CLI takes is one a request may send too.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit seed


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (argparse prints the usage first); --help is unchanged."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"nanochat-py: error: {message} (see: {self.prog} --help)\n")


def whole(low: int, high: int | None = None, why: str = "") -> Callable[[str], int]:
    """An int in [low, high]; `why` explains the bound in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: it must be {bounds}{why}")
        return value

    return parse


def real(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """A finite float in [low, high] (or (low, high] with low_open)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            bounds = f"in ({low}, {high}]" if low_open else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: it must be a number {bounds}")
        return value

    return parse

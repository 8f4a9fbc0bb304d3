"""argparse ``type=`` checks shared by edgetpuctl's commands: a bad value is a usage error (exit 2)."""
from __future__ import annotations

import argparse
import math
from typing import Callable, Optional

#: The daemon's own limit (daemon/api/convert.py MAX_TOP_K), kept here so the CLI loads no API code.
MAX_TOP_K = 10000


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type accepting integers >= ``minimum``.

    The returned function raises argparse.ArgumentTypeError for anything else.
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def number(minimum: Optional[float] = None, above: bool = False) -> Callable[[str], float]:
    """An argparse type accepting finite numbers, at least ``minimum`` (more than it when ``above``).

    argparse's own ``float`` lets "nan", "inf" and negative values through to the daemon, where a
    timeout of 0 came back as a bare DEADLINE_EXCEEDED and a NaN latency was set on a mock device.
    The returned function raises argparse.ArgumentTypeError for anything else.
    """
    if minimum is None:
        wanted = "a finite number"
    else:
        wanted = f"a number {'>' if above else '>='} {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not math.isfinite(value) or (minimum is not None and (value < minimum or (above and value == minimum))):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    return parse


def int_between(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type accepting integers from ``minimum`` to ``maximum``.

    Checked here so an absurd value is a usage error naming the range, not protobuf's "Value out of range".
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"expected an integer from {minimum} to {maximum}, got {text!r}")
        return value
    return parse


def score(text: str) -> float:
    """An argparse type accepting a score, a number from 0 to 1."""
    value = number(0.0)(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"expected a score from 0 to 1, got {text!r}")
    return value

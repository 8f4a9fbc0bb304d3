"""Progress bars for the slow commands (adding many images, training, export): tqdm on stderr.

A bar appears only on a terminal, and only once the work has taken a second, so scripts,
pipes and quick calls see nothing but the command's own output.
"""
from __future__ import annotations

from typing import Any, Optional, TextIO

from tqdm import tqdm


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def bar(stream: TextIO, total: Optional[float], desc: str, unit: str = "it", **options: Any) -> tqdm:
    """A tqdm bar on ``stream`` (disabled when it is not a terminal; shown after one second)."""
    return tqdm(total=total, desc=desc, unit=unit, file=stream, delay=1, leave=False,
                disable=not is_terminal(stream), dynamic_ncols=True, **options)

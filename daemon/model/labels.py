"""Label files: map class ids to names.

A TensorFlow label map (``.pbtxt``, ``item { name id }``) is read by ``label_map``.

Three layouts exist in the wild and Coral ships all of them: ``id label``,
``id:label`` (with any spacing, e.g. ``0  person``) and one label a line where the
line number is the id (``imagenet_labels.txt``). A file is in the id layout only
when every non-blank line starts with an id, so a one-a-line file whose labels
happen to start with digits is not misread.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Union

from edgetpud.daemon.errors import ModelError

from .label_map import looks_like_label_map, parse_label_map

log = logging.getLogger(__name__)

_ID_LINE = re.compile(r"^\s*(\d+)\s*(?::\s*|\s+)(\S.*?)\s*$")


def parse_labels(text: str, origin: str = "labels") -> Dict[int, str]:
    """Parse the text of a label file into ``{id: label}``.

    Raises:
        ModelError: the same id appears twice.
    """
    lines = text.splitlines()
    content = [(n, line) for n, line in enumerate(lines) if line.strip()]
    if not content:
        return {}
    matches = [(n, _ID_LINE.match(line)) for n, line in content]
    labels: Dict[int, str] = {}
    if all(m is not None for _, m in matches):
        for n, m in matches:
            assert m is not None
            key = int(m.group(1))
            if key in labels:
                raise ModelError(f"{origin}: id {key} appears twice (line {n + 1})")
            labels[key] = m.group(2)
    else:
        # One label a line: the line number is the id, blank lines keep their number.
        for n, line in content:
            labels[n] = line.strip()
    return labels


def read_labels(path: Union[str, Path]) -> Dict[int, str]:
    """Read a label file (UTF-8, a BOM tolerated) into ``{id: label}``.

    Raises:
        ModelError: the file cannot be read, is not UTF-8 text, or repeats an id.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read labels file {path}: {exc.strerror or exc}") from exc
    labels = decode_labels(data, f"labels file {path}", label_map=path.suffix == ".pbtxt")
    log.debug("read %d labels from %s", len(labels), path)
    return labels


def decode_labels(data: bytes, origin: str = "the labels file", label_map: bool = False) -> Dict[int, str]:
    """A label file's bytes (read here, or sent with a load) into ``{id: label}``; a TensorFlow
    label map (``label_map``, or text that looks like one) by ``label_map.parse_label_map``.

    Raises:
        ModelError: not UTF-8 text (a BOM is tolerated), NUL characters, or an id repeated.
    """
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{origin} is not UTF-8 text: {exc}") from exc
    if "\x00" in text:
        raise ModelError(f"{origin} is not a text file")
    if label_map or looks_like_label_map(text):
        return parse_label_map(text, origin=origin)
    return parse_labels(text, origin=origin)

"""TensorFlow label maps (``.pbtxt``): ``item { name: "sedan" id: 1 }`` entries.

Detection models exported from the TensorFlow Object Detection API (the AutoML
Video traffic model among them) are trained on label-map ids counted from 1, id 0
being the background; their ``TFLite_Detection_PostProcess`` drops the background
and emits class index ``id - 1``. So ``{"sedan" id 1, "pickup_suv_van" id 2}`` is
read as ``{0: "sedan", 1: "pickup_suv_van"}``: the index the model emits. For a
label map numbered 1, 2, 3... in order this is exactly what Google's reference code
does (it takes the label at the class index's position in the file); a map with gaps
keeps its gaps, as the export does.
"""
from __future__ import annotations

import re
from typing import Dict

from edgetpud.daemon.errors import ModelError

_ITEM = re.compile(r"item\s*\{([^{}]*)\}", re.S)
_FIELD = re.compile(r"""(\w+)\s*:\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s"']+)""")
_LOOKS_LIKE = re.compile(r"^\s*(#.*\n\s*)*item\s*\{")


def looks_like_label_map(text: str) -> bool:
    """Whether a labels file is a label map (starts with ``item {`` after comments)."""
    return bool(_LOOKS_LIKE.match(text))


def parse_label_map(text: str, origin: str = "label map") -> Dict[int, str]:
    """``{class index: name}`` from a label map's text (index = id - 1; ``display_name`` when there is no name).

    Raises:
        ModelError: no items, text outside items, an item without an integer id >= 1 or a name,
            or an id used twice.
    """
    body = re.sub(r"#[^\n]*", "", text)
    items = _ITEM.findall(body)
    rest = _ITEM.sub("", body).strip()
    if rest or not items:
        raise ModelError(f"{origin}: not a label map (expected only 'item {{ name: \"...\" id: N }}' entries)")
    labels: Dict[int, str] = {}
    for n, item in enumerate(items, 1):
        fields = {key: value for key, value in _FIELD.findall(item)}
        raw_id = fields.get("id", "")
        if not re.fullmatch(r"\d+", raw_id) or int(raw_id) < 1:
            raise ModelError(f"{origin}: item {n} needs an integer id of 1 or more (0 is the background), "
                             f"got {raw_id or 'none'}")
        name = fields.get("name") or fields.get("display_name")
        if not name or name[0] not in "\"'":
            raise ModelError(f"{origin}: item {n} (id {raw_id}) needs a quoted name")
        index = int(raw_id) - 1
        if index in labels:
            raise ModelError(f"{origin}: id {raw_id} appears twice (item {n})")
        labels[index] = name[1:-1].encode().decode("unicode_escape") if "\\" in name else name[1:-1]
    return labels

"""How edgetpuctl prints: one JSON document for scripts, aligned tables for people."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Sequence, TextIO

import numpy as np

from edgetpud.daemon.client import Device, Model


def plain(value: Any) -> Any:
    """JSON-ready copy: dataclasses to dicts, arrays to lists, tuples to lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(document: Dict[str, Any], out: TextIO) -> None:
    json.dump(plain(document), out, indent=2)
    out.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells) + "\n"


def model_summary(model: Model) -> Dict[str, Any]:
    """A model as ``status`` shows it: every key but the compatibility report's operator list.

    A report lists every operator (31 for the smallest MobileNet), which buried the
    status of a few models in hundreds of lines; ``models info NAME`` shows it whole.
    """
    document = plain(model)
    if model.report is not None:
        document["report"] = {"verdict": model.report.get("verdict"), "summary": model.report.get("summary")}
    return document


def devices_table(devices: Sequence[Device]) -> str:
    if not devices:
        return "no devices\n"
    return table(["ID", "KIND", "STATE", "TEMP °C", "THROTTLE", "RESTARTS", "MODELS"],
                 [[d.id, d.kind, d.state, None if d.temperature_c is None else f"{d.temperature_c:.1f}",
                   d.throttle_level, d.restarts, ",".join(d.models) or None] for d in devices])


def models_table(models: Sequence[Model]) -> str:
    if not models:
        return "no models\n"
    return table(["NAME", "VERSION", "TASK", "STATE", "DEVICES", "EDGETPU", "ERROR"],
                 [[m.name, m.version or None, m.task or None, m.state, ",".join(m.devices) or None,
                   "yes" if m.edgetpu_compiled else "no", m.error or None] for m in models])


def model_text(model: Model) -> str:
    lines = [f"Model: {model.name}", f"Version: {model.version or '-'}", f"Task: {model.task or '-'}",
             f"State: {model.state}", f"Path: {model.path or '-'}", f"Devices: {', '.join(model.devices) or '-'}",
             f"Labels: {model.label_count}", f"Compiled for the Edge TPU: {'yes' if model.edgetpu_compiled else 'no'}"]
    if model.error:
        lines.append(f"Error: {model.error}")
    lines += [f"Problem: {problem}" for problem in model.problems]
    for title, tensors in (("Inputs", model.inputs), ("Outputs", model.outputs)):
        lines.append(f"{title}:")
        lines += [f"  {t.name}  {t.dtype}  {list(t.shape)}  scale={t.scale:g} zero_point={t.zero_point}"
                  for t in tensors]
    report = model.report
    if report:
        summary = report.get("summary", {})
        lines.append(f"Edge TPU compatibility: {report.get('verdict')} "
                     f"({summary.get('tpu_ops', 0)} ops on the TPU, {summary.get('cpu_ops', 0)} on the CPU)")
        lines += [f"  {op['index']:>4}  {op['op']:<24}  {op['target']:<4}  {op.get('reason') or ''}".rstrip()
                  for op in report.get("operators", [])]
    return "\n".join(lines) + "\n"


def results_rows(results: List[Dict[str, Any]], key: str) -> str:
    """Human output of classify/detect/embed results, one block per image."""
    blocks = []
    for r in results:
        head = f"{r['image']}  (model {r['model']} {r.get('version') or ''} on {r['device']})".replace("  )", ")")
        if key == "classes":
            body = table(["ID", "LABEL", "SCORE"], [[c["id"], c["label"], f"{c['score']:.4f}"] for c in r[key]])
        elif key == "objects":
            body = table(["ID", "LABEL", "SCORE", "BBOX"],
                         [[o["id"], o["label"], f"{o['score']:.4f}",
                           "[" + ", ".join(f"{v:.1f}" for v in o["bbox"]) + "]"] for o in r[key]])
        else:
            vector = r[key]
            preview = ", ".join(f"{v:.4f}" for v in vector[:8]) + (", ..." if len(vector) > 8 else "")
            body = f"embedding ({len(vector)} values): [{preview}]\n"
        blocks.append(head + "\n" + body)
    return "\n".join(blocks)

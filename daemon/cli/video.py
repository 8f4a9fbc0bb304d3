"""``edgetpuctl detect --stream`` (a camera's frames through one stream, state carried) and
``edgetpuctl invoke`` (raw tensors in and out, for models no image task fits)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

import numpy as np

from . import output
from .exits import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from .main import Context

#: Frame files a --stream DIR is read for, in name order.
FRAME_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".png")


def stream_frames(paths: List[str]) -> List[Path]:
    """The frames to stream: the files given, in order, or one folder's images in name order.

    Raises:
        argparse.ArgumentTypeError: a folder among several paths, or a folder without images.
    """
    given = [Path(p) for p in paths]
    if len(given) == 1 and given[0].is_dir():
        frames = sorted(p for p in given[0].iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file())
        if not frames:
            raise argparse.ArgumentTypeError(f"{given[0]} has no {', '.join(FRAME_SUFFIXES)} files")
        return frames
    folders = [str(p) for p in given if p.is_dir()]
    if folders:
        raise argparse.ArgumentTypeError(f"--stream takes frame files or one folder, not folders among files: "
                                         f"{', '.join(folders)}")
    return given


def cmd_detect_stream(ctx: "Context", model: str) -> int:
    """Every frame through one Stream, in order (a recurrent model carries its state); a line per frame."""
    try:
        frames = stream_frames(ctx.args.images)
    except argparse.ArgumentTypeError as exc:
        print(f"edgetpuctl detect: error: {exc}", file=ctx.stderr)
        return EXIT_FAILED
    results: List[Dict[str, Any]] = []
    lines: List[str] = []
    answers = ctx.client.stream(model, ((n, path) for n, path in enumerate(frames, 1)), task="detect",
                                top_k=ctx.args.top_k, threshold=ctx.args.threshold, max_in_flight=1)
    for answer in answers:
        path = str(frames[answer.frame_id - 1])
        if not answer.ok:
            message = answer.error.message if answer.error is not None else answer.status
            code = answer.error.code.name if answer.error is not None else answer.status.upper()
            results.append({"image": path, "frame": answer.frame_id, "error": {"code": code, "message": message}})
            lines.append(f"{path}: {code}: {message}")
            continue
        r = answer.result
        objects = output.plain(r.objects)
        results.append({"image": path, "frame": answer.frame_id, "model": r.model, "version": r.version,
                        "device": r.device, "objects": objects, "timing": output.plain(r.timing)})
        found = "; ".join(f"{o['id']} {o['label']} {o['score']:.3f} [" + ", ".join(f"{v:.1f}" for v in o["bbox"])
                          + "]" for o in objects) or "no objects"
        lines.append(f"{path}: {found}")
    ctx.emit({"results": results}, "\n".join(lines) + "\n")
    failed = [r for r in results if "error" in r]
    return EXIT_FAILED if failed else EXIT_OK


def cmd_invoke(ctx: "Context") -> int:
    """Raw inputs (``--input NAME=FILE.npy``; the others zeros) in, every output tensor out."""
    info = ctx.client.model_info(ctx.args.model)
    given: Dict[str, np.ndarray] = {}
    for item in ctx.args.input or []:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            print(f"edgetpuctl invoke: error: --input {item!r}: expected NAME=FILE.npy", file=ctx.stderr)
            return EXIT_FAILED
        try:
            given[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            print(f"edgetpuctl invoke: error: --input {name}: cannot read {file} as a .npy array: {exc}",
                  file=ctx.stderr)
            return EXIT_FAILED
    unknown = sorted(set(given) - {t.name for t in info.inputs})
    if unknown:
        print(f"edgetpuctl invoke: error: model {info.name} has no input(s) {unknown}; its inputs are "
              f"{[t.name for t in info.inputs]}", file=ctx.stderr)
        return EXIT_FAILED
    inputs = {t.name: given[t.name] if t.name in given else np.zeros(t.shape, dtype=np.dtype(t.dtype))
              for t in info.inputs}
    r = ctx.client.invoke(info.name, inputs)
    outputs = {name: {"shape": list(a.shape), "dtype": a.dtype.name, "values": a.ravel().tolist()}
               for name, a in r.outputs.items()}
    text = "".join(
        f"{name} {o['shape']} {o['dtype']}: [" + ", ".join(f"{v:.6g}" for v in o["values"][:8])
        + (", ..." if len(o["values"]) > 8 else "") + "]\n" for name, o in outputs.items())
    ctx.emit({"model": r.model, "version": r.version, "device": r.device,
              "zeros": sorted(set(inputs) - set(given)), "outputs": outputs}, text)
    return EXIT_OK


def add_invoke_parser(sub: Any) -> None:
    p = sub.add_parser("invoke", help="run a model on raw tensors (.npy files; the other inputs zeros)")
    p.add_argument("-m", "--model", required=True, help="model name")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="an input from a .npy file (repeatable); inputs not given are zeros")
    p.set_defaults(func=cmd_invoke)

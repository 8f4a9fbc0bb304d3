"""edgetpuctl's retraining commands: classes add|list|remove, train, export, heads list|restore.

Registered on edgetpuctl's subparsers by :func:`add_parsers`; each command takes main's
``Context`` and returns the exit code, with main's conventions: one JSON document with
``--json``, errors on stderr, 1 for a refused or failed request (or an unusable file),
2 for a usage error.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import grpc

from edgetpud.daemon.client import AddedSamples, ClientError, ExportResult, LearnedModel, TrainProgress
from edgetpud.daemon.learn.imprinting import MAX_SAMPLES_PER_CALL

from . import export_files, output, progress
from .argtypes import int_at_least, number
from .exits import EXIT_INTERRUPTED, EXIT_OK
from .samples import image_files, labeled_folder

if TYPE_CHECKING:
    from .main import Context

#: Seconds the deadline of an AddSamples call grows by per image, on top of --timeout.
SECONDS_PER_IMAGE = 0.5
TARGETS = ("cpu", "edgetpu")


# ---------------------------------------------------------------- documents and text

def learned_document(model: LearnedModel) -> Dict[str, Any]:
    """The ``classes`` document of DESIGN.md (model, classes[].label/samples/source) with the head's version."""
    return output.plain(model)


def classes_text(model: LearnedModel) -> str:
    head = (f"{model.model}: head version {model.head_version} ({model.method or '-'}), "
            f"serving as version {model.version or '-'}\n")
    if not model.classes:
        return head + "no classes\n"
    return head + output.table(["ID", "LABEL", "SAMPLES", "SOURCE"],
                               [[c.id, c.label, c.samples, c.source] for c in model.classes])


def _progress_entry(item: TrainProgress) -> Dict[str, Any]:
    return {"epoch": item.epoch, "epochs": item.epochs, "loss": item.loss, "train_accuracy": item.train_accuracy,
            "validation_accuracy": item.validation_accuracy}


def _accuracy(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


# ---------------------------------------------------------------- adding samples

def _add(ctx: "Context", model: str, pairs: Sequence[Tuple[str, Path]], keep_classes: bool) -> AddedSamples:
    """Send every (label, image), with a progress bar counting the images sent.

    The daemon takes at most MAX_SAMPLES_PER_CALL samples in one call (it holds them in memory
    until the call ends), so a large folder goes in several calls, each stored whole; the
    result is the head after the last one, with ``added`` counting them all.
    """
    bar = progress.bar(ctx.stderr, total=len(pairs), desc=f"adding to {model}", unit="image")

    def counted(part: Sequence[Tuple[str, Path]]) -> Any:
        for pair in part:
            yield pair
            bar.update(1)

    results: List[AddedSamples] = []
    try:
        for start in range(0, len(pairs), MAX_SAMPLES_PER_CALL):
            part = pairs[start:start + MAX_SAMPLES_PER_CALL]
            results.append(ctx.client.add_labeled_images(
                model, counted(part), keep_classes=keep_classes and start == 0,
                timeout=ctx.args.timeout + SECONDS_PER_IMAGE * len(part)))
    finally:
        bar.close()
    return dataclasses.replace(results[-1], added=sum(r.added for r in results))


def _pairs_from_folder(ctx: "Context", root: str) -> List[Tuple[str, Path]]:
    pairs, skipped = labeled_folder(root)
    for name in skipped:
        print(f"edgetpuctl: note: {Path(root) / name} holds no images; skipped", file=ctx.stderr)
    return pairs


def _added_text(result: AddedSamples) -> str:
    return f"added {result.added} sample{'s' if result.added != 1 else ''}\n" + classes_text(result)


def cmd_classes_add(ctx: "Context") -> int:
    args = ctx.args
    if args.source is not None:
        if args.images or args.label is not None:
            args.usage_error("--from DIR takes the labels from its folder names: give it without --label and IMAGE")
        pairs = _pairs_from_folder(ctx, args.source)
    else:
        if args.label is None or not args.images:
            args.usage_error("give --label L and one or more IMAGE files, or --from DIR")
        pairs = [(args.label, path) for path in image_files(args.images)]
    result = _add(ctx, args.model, pairs, args.keep_classes)
    ctx.emit(learned_document(result), _added_text(result))
    return EXIT_OK


def cmd_classes_list(ctx: "Context") -> int:
    model = ctx.client.classes(ctx.args.model)
    ctx.emit(learned_document(model), classes_text(model))
    return EXIT_OK


def cmd_classes_remove(ctx: "Context") -> int:
    model = ctx.client.remove_class(ctx.args.model, ctx.args.label)
    ctx.emit({**learned_document(model), "removed": ctx.args.label},
             f"removed {ctx.args.label}\n" + classes_text(model))
    return EXIT_OK


# ---------------------------------------------------------------- training

def cmd_train(ctx: "Context") -> int:
    args = ctx.args
    added: Optional[AddedSamples] = None
    if args.data is not None:
        added = _add(ctx, args.model, _pairs_from_folder(ctx, args.data), keep_classes=False)
    run = ctx.client.train(args.model, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                           l2=args.l2, validation_fraction=args.validation, seed=args.seed,
                           warm_start=args.warm_start)
    history: List[TrainProgress] = []
    bar = progress.bar(ctx.stderr, total=args.epochs, desc=f"training {args.model}", unit="epoch")
    try:
        for item in run:
            if item.model is not None and history and history[-1].epoch == item.epoch:
                history[-1] = item  # the same epoch again, now with the head
                continue
            history.append(item)
            if bar.total != item.epochs:
                bar.total = item.epochs
            bar.update(item.epoch - bar.n)
            bar.set_postfix(loss=f"{item.loss:.4f}", train=_accuracy(item.train_accuracy),
                            validation=_accuracy(item.validation_accuracy), refresh=False)
    except KeyboardInterrupt:
        run.cancel()
        bar.close()
        print("edgetpuctl train: cancelled; the head that served before still serves", file=ctx.stderr)
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    if run.model is None or not history:
        raise ClientError(grpc.StatusCode.INTERNAL, "training ended without sending the new head")
    last = history[-1]
    document = {**learned_document(run.model), "epochs": last.epochs, "loss": last.loss,
                "train_accuracy": last.train_accuracy, "validation_accuracy": last.validation_accuracy,
                "history": [_progress_entry(item) for item in history]}
    text = (f"trained {last.epochs} epochs: loss {last.loss:.4f}, train accuracy {_accuracy(last.train_accuracy)}, "
            f"validation accuracy {_accuracy(last.validation_accuracy)}\n" + classes_text(run.model))
    if added is not None:
        document["added"] = added.added
        text = f"added {added.added} samples\n" + text
    ctx.emit(document, text)
    return EXIT_OK


# ---------------------------------------------------------------- export

def _export(ctx: "Context", target: str) -> ExportResult:
    bar = progress.bar(ctx.stderr, total=None, desc=f"export {ctx.args.model} ({target})", unit="B",
                       unit_scale=True, unit_divisor=1024)

    def advance(received: int, size: int) -> None:
        bar.total = size
        bar.update(received - bar.n)

    try:
        return ctx.client.export(ctx.args.model, target=target, on_progress=advance)
    finally:
        bar.close()


def _bundle_exports(ctx: "Context", target: Optional[str]) -> Tuple[ExportResult, Optional[ExportResult]]:
    """The CPU twin and, unless ``--target cpu``, the compiled export (None where the daemon has none).

    Both must carry the same head: another client may change it between the two calls, so
    a mismatch is fetched again a few times before it is an error.
    """
    for _ in range(3):
        cpu = _export(ctx, "cpu")
        if target == "cpu":
            return cpu, None
        try:
            compiled = _export(ctx, "edgetpu")
        except ClientError as exc:
            if exc.code == grpc.StatusCode.FAILED_PRECONDITION and target is None:
                return cpu, None  # no compiled twin: a CPU-only bundle
            raise
        if compiled.head_version == cpu.head_version:
            return cpu, compiled
    raise ClientError(grpc.StatusCode.ABORTED, "the model's head kept changing during the export; run it again")


def cmd_export(ctx: "Context") -> int:
    args = ctx.args
    out = Path(args.output)
    if out.suffix.lower() == ".tflite":
        result = _export(ctx, args.target or "cpu")
        export_files.write_atomic(out, result.data)
        files = [{"path": str(out), "target": result.target, "size": result.size}]
        first = result
    else:
        cpu, compiled = _bundle_exports(ctx, args.target)
        written = export_files.write_bundle(out, cpu, compiled)
        targets = {export_files.CPU_FILE: cpu, export_files.EDGETPU_FILE: compiled}
        files = [{"path": str(path), "target": targets[path.name].target if path.name in targets else None,
                  "size": path.stat().st_size} for path in written]
        first = cpu
    document = {"model": first.model, "head_version": first.head_version, "output": str(out),
                "bundle": out.suffix.lower() != ".tflite", "labels": first.labels, "files": files}
    text = "".join(f"wrote {f['path']} ({f['size']} bytes)\n" for f in files)
    ctx.emit(document, text)
    return EXIT_OK


# ---------------------------------------------------------------- head versions

def _created(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).isoformat(sep=" ", timespec="seconds") if seconds else "-"


def cmd_heads_list(ctx: "Context") -> int:
    heads = ctx.client.heads(ctx.args.model)
    text = output.table(["VERSION", "METHOD", "CREATED", "CLASSES", "CURRENT"],
                        [[h.head_version, h.method, _created(h.created), ",".join(h.labels) or None,
                          "*" if h.current else ""] for h in heads]) if heads else "no head versions\n"
    ctx.emit({"model": ctx.args.model, "heads": [output.plain(h) for h in heads]}, text)
    return EXIT_OK


def cmd_heads_restore(ctx: "Context") -> int:
    model = ctx.client.restore_head(ctx.args.model, ctx.args.version)
    ctx.emit({**learned_document(model), "restored": ctx.args.version},
             f"restored head version {ctx.args.version}\n" + classes_text(model))
    return EXIT_OK


# ---------------------------------------------------------------- parser

def _fraction(text: str) -> float:
    """--validation F: a share in [0, 1)."""
    value = number(0)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction >= 0 and < 1, got {text!r}")
    return value


def _seed(text: str) -> int:
    value = int_at_least(0)(text)
    if value >= 2 ** 64:
        raise argparse.ArgumentTypeError(f"expected an integer below 2**64, got {text!r}")
    return value


def _leaf(sub: Any, name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=func, usage_error=parser.error)
    return parser


def add_parsers(sub: Any) -> None:
    """Register the retraining commands on edgetpuctl's subparsers."""
    classes = sub.add_parser("classes", help="the classes a model learned on the device: add, list, remove")
    csub = classes.add_subparsers(dest="classes_command", metavar="ACTION", required=True)
    p = _leaf(csub, "add", "teach a model a class from labeled images (weight imprinting)", cmd_classes_add)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="JPEG, PNG or BMP files of the class")
    p.add_argument("-m", "--model", required=True, help="the model to teach (an embedding model or a classifier)")
    p.add_argument("-l", "--label", help="the class's label")
    p.add_argument("--from", dest="source", metavar="DIR",
                   help="one folder of images per label (the folder name is the label), instead of --label/IMAGE")
    p.add_argument("--keep-classes", action="store_true",
                   help="keep a classifier's pretrained classes beside the new ones")
    p = _leaf(csub, "list", "the classes a model serves, with their samples and source", cmd_classes_list)
    p.add_argument("-m", "--model", required=True)
    p = _leaf(csub, "remove", "remove a class and its samples", cmd_classes_remove)
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-l", "--label", required=True)

    p = _leaf(sub, "train", "train a model's last layer on its stored samples (backpropagation)", cmd_train)
    p.add_argument("-m", "--model", required=True)
    p.add_argument("--data", metavar="DIR", help="first add the images of DIR, one folder per label (as classes add --from)")
    p.add_argument("--epochs", type=int_at_least(1), help="passes over the samples (default: the daemon's)")
    p.add_argument("--lr", type=number(0, above=True), help="learning rate (default: the daemon's)")
    p.add_argument("--batch-size", type=int_at_least(1), help="samples per step (default: the daemon's)")
    p.add_argument("--l2", type=number(0, above=True), help="L2 regularisation (default: the daemon's)")
    p.add_argument("--validation", type=_fraction, metavar="F",
                   help="share of the samples held out for validation accuracy (default: the daemon's)")
    p.add_argument("--seed", type=_seed, help="the same seed on the same samples gives the same head")
    p.add_argument("--warm-start", action="store_true", help="start from the imprinted weights instead of zeros")

    p = _leaf(sub, "export", "write a model with its head as a .tflite or a bundle that runs without edgetpud",
              cmd_export)
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="OUT.tflite for one file; otherwise a bundle folder (model.tflite, model_edgetpu.tflite "
                        "when the base has a compiled twin, labels.txt, model.toml)")
    p.add_argument("--target", choices=TARGETS,
                   help="which model: cpu (the CPU twin) or edgetpu (the compiled base); default: cpu for a "
                        ".tflite, both where available for a bundle")

    heads = sub.add_parser("heads", help="a model's head versions: list, restore")
    hsub = heads.add_subparsers(dest="heads_command", metavar="ACTION", required=True)
    p = _leaf(hsub, "list", "every stored head version of a model", cmd_heads_list)
    p.add_argument("-m", "--model", required=True)
    p = _leaf(hsub, "restore", "serve an earlier head version again", cmd_heads_restore)
    p.add_argument("-m", "--model", required=True)
    p.add_argument("--version", type=int_at_least(1), required=True, metavar="N", help="the head version")

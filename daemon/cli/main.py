"""edgetpuctl: talk to a running edgetpud (status, devices, models, inference, retraining, mock faults).

Everything goes through ``edgetpud.daemon.client``. ``--json`` prints exactly one
JSON document on stdout; errors always go to stderr with a non-zero exit code:
1 when the daemon refused or failed the request (or is not ready, for
``status``, or refused one of the images of classify/detect/embed, which the
document then lists with an "error"), 2 for a usage error.
"""
from __future__ import annotations

import argparse
import errno
import io
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import grpc

from edgetpud.daemon.client import Client, ClientError, ImageTooLargeError, default_address

from . import output, video
from .argtypes import MAX_TOP_K, int_at_least, int_between, number, score
from .exits import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_OK



class Context:
    """What a command needs: the parsed args, a client and where to print."""

    def __init__(self, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> None:
        self.args = args
        self.stdout = stdout
        self.stderr = stderr
        self.client = Client(args.address, timeout=args.timeout)

    @property
    def json(self) -> bool:
        return bool(self.args.json)

    def emit(self, document: Dict[str, Any], text: str) -> None:
        if self.json:
            output.write_json(document, self.stdout)
        else:
            self.stdout.write(text)


# ---------------------------------------------------------------- commands

def cmd_status(ctx: Context) -> int:
    status = ctx.client.status()
    document = {"ready": status.ready, "version": status.version,
                "devices": [output.plain(d) for d in status.devices],
                "models": [output.model_summary(m) for m in status.models]}
    text = (f"edgetpud {status.version} at {ctx.client.address}: {'READY' if status.ready else 'NOT READY'}\n\n"
            + output.devices_table(status.devices) + "\n" + output.models_table(status.models))
    ctx.emit(document, text)
    if not status.ready:
        print("edgetpuctl: the daemon is not ready (see the device and model states above, or its log)",
              file=ctx.stderr)
    return EXIT_OK if status.ready else EXIT_FAILED


def cmd_devices(ctx: Context) -> int:
    devices = ctx.client.devices()
    ctx.emit({"devices": [output.plain(d) for d in devices]}, output.devices_table(devices))
    return EXIT_OK


def cmd_models_list(ctx: Context) -> int:
    models = ctx.client.models()
    ctx.emit({"models": [output.plain(m) for m in models]}, output.models_table(models))
    return EXIT_OK


def cmd_models_info(ctx: Context) -> int:
    model = ctx.client.model_info(ctx.args.name)
    ctx.emit(output.plain(model), output.model_text(model))
    return EXIT_OK


def cmd_models_load(ctx: Context) -> int:
    args = ctx.args
    labels = Path(args.labels).read_bytes() if args.labels else None  # read here: the daemon may be elsewhere
    if args.upload:
        model = ctx.client.load_model(args.name, data=Path(args.path).read_bytes(), labels=labels)
    else:
        model = ctx.client.load_model(args.name, path=str(Path(args.path).resolve()), labels=labels)
    ctx.emit(output.plain(model), f"loaded {model.name} version {model.version or '-'}: {model.state}\n")
    return EXIT_OK


def cmd_models_unload(ctx: Context) -> int:
    ctx.client.unload_model(ctx.args.name)
    ctx.emit({"unloaded": ctx.args.name}, f"unloaded {ctx.args.name}\n")
    return EXIT_OK


def _model_for(ctx: Context, task: str) -> str:
    """--model, or the one ready model of this task when there is exactly one.

    Raises:
        ClientError: no --model and not exactly one candidate.
    """
    if ctx.args.model:
        return ctx.args.model
    candidates = [m.name for m in ctx.client.models() if m.task == task and m.state == "ready"]
    if len(candidates) == 1:
        return candidates[0]
    import grpc
    raise ClientError(grpc.StatusCode.INVALID_ARGUMENT,
                      f"say which model to use with --model (ready {task} models: {', '.join(candidates) or 'none'})")


def _image_error(image: str, exc: Exception) -> Optional[Dict[str, Any]]:
    """The results entry of an image that failed on its own, or None when ``exc`` ends the command.

    A file that cannot be read, the daemon's INVALID_ARGUMENT (not an image, a crop
    outside it, ...) and a request over the message size limit are about that one image,
    so the other images still get results.
    Anything else (daemon unreachable, unknown model, daemon at capacity) would fail
    every image the same way, so it fails the command instead.
    """
    if isinstance(exc, OSError):
        code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        return {"image": image, "error": {"code": code, "message": exc.strerror or str(exc)}}
    if isinstance(exc, ImageTooLargeError) or (isinstance(exc, ClientError)
                                                and exc.code == grpc.StatusCode.INVALID_ARGUMENT):
        return {"image": image, "error": {"code": exc.code.name, "message": exc.message}}
    return None


def _per_image(ctx: Context, task: str, infer: Callable[..., Any], key: str, payload: Callable[[Any], Any],
               **options: Any) -> int:
    """Run every image through ``infer``, a client method.

    Classify, detect and embed differ only in that call, its options and the payload,
    so one loop keeps their --json results the same shape. A failed image gets an
    entry with "error" instead of the payload (and a line on stderr) and exit code 1,
    so one bad file does not hide the results of the others.
    """
    model = _model_for(ctx, task)
    results = []
    for image in ctx.args.images:
        try:
            r = infer(model, Path(image), crop=ctx.args.crop, **options)
        except (ClientError, OSError) as exc:
            entry = _image_error(image, exc)
            if entry is None:
                raise
            results.append(entry)
            continue
        results.append({"image": image, "model": r.model, "version": r.version, "device": r.device,
                        key: payload(r), "timing": output.plain(r.timing)})
    failed = [r for r in results if "error" in r]
    ctx.emit({"results": results}, output.results_rows([r for r in results if "error" not in r], key))
    for r in failed:
        print(f"edgetpuctl {ctx.args.command}: error: {r['image']}: {r['error']['code']}: {r['error']['message']}",
              file=ctx.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_classify(ctx: Context) -> int:
    return _per_image(ctx, "classify", ctx.client.classify, "classes", lambda r: output.plain(r.classes),
                      top_k=ctx.args.top_k, threshold=ctx.args.threshold)


def cmd_detect(ctx: Context) -> int:
    if ctx.args.stream:
        return video.cmd_detect_stream(ctx, _model_for(ctx, "detect"))
    return _per_image(ctx, "detect", ctx.client.detect, "objects", lambda r: output.plain(r.objects),
                      top_k=ctx.args.top_k, threshold=ctx.args.threshold)


def cmd_embed(ctx: Context) -> int:
    return _per_image(ctx, "embed", ctx.client.embed, "embedding", lambda r: r.embedding.ravel().tolist(),
                      normalize=ctx.args.normalize)


def _mock(action: Callable[[Context], List[Any]]) -> Callable[[Context], int]:
    def run(ctx: Context) -> int:
        devices = action(ctx)
        ctx.emit({"devices": [output.plain(d) for d in devices]}, output.devices_table(devices))
        return EXIT_OK
    return run


cmd_mock_fault = _mock(lambda ctx: ctx.client.mock.inject_fault(
    ctx.args.device, ctx.args.fault, ctx.args.count, seconds=ctx.args.seconds, message=ctx.args.message,
    after_s=ctx.args.after))
cmd_mock_clear = _mock(lambda ctx: ctx.client.mock.clear_faults(ctx.args.device))
cmd_mock_unplug = _mock(lambda ctx: ctx.client.mock.unplug(ctx.args.device))
cmd_mock_replug = _mock(lambda ctx: ctx.client.mock.replug(ctx.args.device))
cmd_mock_temperature = _mock(lambda ctx: ctx.client.mock.set_temperature(ctx.args.device, ctx.args.celsius))
cmd_mock_latency = _mock(lambda ctx: ctx.client.mock.set_latency(
    ctx.args.device, None if ctx.args.ms < 0 else ctx.args.ms / 1000.0))


# ---------------------------------------------------------------- parser

def _crop(text: str) -> Tuple[int, int, int, int]:
    """--crop X,Y,W,H as argparse's type, so a malformed region is a usage error (exit 2), not a failure."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y,W,H (four integers), got {text!r}") from None
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"X and Y must be >= 0 and W and H > 0, got {text!r}")
    return x, y, w, h


def _inference_args(parser: argparse.ArgumentParser, top_k: bool = True) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG or BMP files")
    parser.add_argument("-m", "--model", help="model name (default: the only ready model for this task)")
    parser.add_argument("--crop", metavar="X,Y,W,H", type=_crop, help="run on this region of each image")
    if top_k:
        parser.add_argument("-k", "--top-k", type=int_between(0, MAX_TOP_K), default=0,
                            help=f"at most K results, up to {MAX_TOP_K} (default 0: the model's)")
        parser.add_argument("-t", "--threshold", type=score, default=0.0, help="minimum score, 0 to 1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgetpuctl", description="Control and query a running edgetpud.")
    parser.add_argument("--address", default=default_address(),
                        help="unix:PATH or HOST:PORT (default: $EDGETPUD_ADDRESS or %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--timeout", type=number(0, above=True), default=30.0, help="seconds per request (default %(default)s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("status", help="daemon readiness, devices and models (exit 0 only when ready)") \
        .set_defaults(func=cmd_status)
    sub.add_parser("devices", help="Edge TPUs with state, temperature and models").set_defaults(func=cmd_devices)

    models = sub.add_parser("models", help="list, inspect, load or unload models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    msub.add_parser("list", help="loaded models and their state").set_defaults(func=cmd_models_list)
    p = msub.add_parser("info", help="one model: tensors, devices, Edge TPU compatibility report")
    p.add_argument("name")
    p.set_defaults(func=cmd_models_info)
    p = msub.add_parser("load", help="load or replace a model from a bundle folder or .tflite file")
    p.add_argument("name")
    p.add_argument("path", help="bundle folder or .tflite file (a path on the daemon's host unless --upload)")
    p.add_argument("--upload", action="store_true", help="send the .tflite file's bytes instead of its path")
    p.add_argument("--labels", metavar="FILE", help="a labels file (on this host) replacing the bundle's own")
    p.set_defaults(func=cmd_models_load)
    p = msub.add_parser("unload", help="unload a model")
    p.add_argument("name")
    p.set_defaults(func=cmd_models_unload)

    p = sub.add_parser("classify", help="classify images")
    _inference_args(p)
    p.set_defaults(func=cmd_classify)
    p = sub.add_parser("detect", help="detect objects in images")
    _inference_args(p)
    p.add_argument("--stream", action="store_true",
                   help="the images (or one folder's, in name order) are a camera's frames: send them in order "
                        "through one stream, so a recurrent model carries its state; a line per frame")
    p.set_defaults(func=cmd_detect)
    video.add_invoke_parser(sub)
    p = sub.add_parser("embed", help="embedding vectors of images")
    _inference_args(p, top_k=False)
    p.add_argument("--normalize", action="store_true", help="L2-normalise the vectors")
    p.set_defaults(func=cmd_embed)

    try:
        from . import check
    except ImportError:  # the checker is optional for a client-only install
        check = None
    if check is not None:
        check.add_parser(sub)

    from . import learn
    learn.add_parsers(sub)
    from . import metrics
    metrics.add_parser(sub)

    mock = sub.add_parser("mock", help="fault injection (daemon started with --device mock only)")
    ksub = mock.add_subparsers(dest="mock_command", metavar="ACTION", required=True)
    p = ksub.add_parser("fault", help="inject a fault into a mock device")
    p.add_argument("device")
    p.add_argument("fault", choices=["abort", "hang", "error", "timeout"], help="what the next invocations do")
    p.add_argument("--count", type=int_at_least(1), default=1, help="how many invocations it hits (default 1)")
    p.add_argument("--seconds", type=number(0), default=0.0, help="hang/timeout: how long")
    p.add_argument("--message", default="", help="error: the device error message")
    p.add_argument("--after", type=number(0), default=0.0, help="abort: seconds into the invocation")
    p.set_defaults(func=cmd_mock_fault)
    for name, func, text in (("clear", cmd_mock_clear, "drop the faults still queued on a mock device"),
                             ("unplug", cmd_mock_unplug, "unplug a mock device"),
                             ("replug", cmd_mock_replug, "plug a mock device back in")):
        p = ksub.add_parser(name, help=text)
        p.add_argument("device")
        p.set_defaults(func=func)
    p = ksub.add_parser("temperature", help="set a mock device's temperature")
    p.add_argument("device")
    p.add_argument("celsius", type=number())
    p.set_defaults(func=cmd_mock_temperature)
    p = ksub.add_parser("latency", help="set a mock device's simulated invoke latency")
    p.add_argument("device")
    p.add_argument("ms", type=number(), help="milliseconds (negative: back to the configured latency)")
    p.set_defaults(func=cmd_mock_latency)
    for leaf in _leaves(parser):
        if leaf.prog.split()[-1] != "check":
            # SUPPRESS keeps `edgetpuctl --json CMD` working as well as `edgetpuctl CMD --json`.
            leaf.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                              help="print one JSON document on stdout")
    return parser


def _leaves(parser: argparse.ArgumentParser) -> List[argparse.ArgumentParser]:
    """Parsers that take no further subcommand."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for action in subs for child in action.choices.values() for leaf in _leaves(child)]


def _explain(exc: ClientError) -> str:
    """CODE: message. The client library already words a missing or broken connection, naming the address."""
    return f"{exc.code.name}: {exc.message}"


def _command(args: argparse.Namespace) -> str:
    """The command as typed ("models info", "mock fault"), for the error line."""
    action = next((getattr(args, name) for name in ("models_command", "mock_command", "classes_command",
                                                    "heads_command") if getattr(args, name, None)), None)
    return f"{args.command} {action}" if action else str(args.command)


def _reader_left(stdout: TextIO) -> int:
    """The reader of stdout went away (`| head`): stop quietly, as a tool killed by SIGPIPE would.

    stdout is pointed at /dev/null so that Python's flush at exit does not fail again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # not a real file (a test's StringIO): nothing will flush it at exit
    return EXIT_BROKEN_PIPE


def main(argv: Optional[Sequence[str]] = None, stdout: Optional[TextIO] = None,
         stderr: Optional[TextIO] = None) -> int:
    """Parse, run one command, return the exit code (console script: sys.exit(main()))."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # refused as parse_args would, but check's usage errors keep check's exit code
        message = f"unrecognized arguments: {' '.join(unknown)}"
        if getattr(args, "command", None) == "check":  # argparse's 2 would read as "partially mapped"
            from .check import EXIT_BAD_INPUT
            parser.exit(EXIT_BAD_INPUT, f"{parser.prog} check: error: {message}\n")
        parser.error(message)
    if args.command == "check":
        try:
            return args.func(args)
        except BrokenPipeError:
            return _reader_left(stdout)
    ctx: Optional[Context] = None
    try:
        ctx = Context(args, stdout, stderr)
        return args.func(ctx)
    except BrokenPipeError:
        return _reader_left(stdout)
    except ClientError as exc:
        print(f"edgetpuctl {_command(args)}: error: {_explain(exc)}", file=stderr)
        return EXIT_FAILED
    except (OSError, ValueError) as exc:
        print(f"edgetpuctl {_command(args)}: error: {exc}", file=stderr)
        return EXIT_FAILED
    finally:
        if ctx is not None:
            ctx.client.close()


if __name__ == "__main__":
    sys.exit(main())

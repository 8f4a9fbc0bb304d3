"""Model bundles: a folder (or a lone ``.tflite``) with everything needed to serve one model.

A bundle folder holds ``model.tflite`` (the CPU twin), optionally
``model_edgetpu.tflite``, ``labels.txt`` and ``model.toml``. Loading validates
all of it up front, so a broken bundle is refused with one clear ``ModelError``
when it is loaded, never at the first request. Tensor specs are read from the
flatbuffer (``TfliteModel``), not from an interpreter, so loading costs no
device time and works for compiled models on hosts without an Edge TPU.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edgetpud.daemon.errors import ImageError, ModelError
from edgetpud.hal.executor import TensorSpec

from .adapters import DETECTION_POSTPROCESS_OP, detection_layout
from .adapters.detection import postprocess_shapes
from .labels import read_labels
from .state import StatePair, parse_state, task_inputs, task_outputs
from .preprocess import RESIZE_METHODS, input_size
from .tflite import TensorInfo, TfliteModel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

log = logging.getLogger(__name__)

TASKS: Tuple[str, ...] = ("classify", "detect", "embed", "raw")
IMAGE_TASKS: Tuple[str, ...] = ("classify", "detect", "embed")
MODEL_FILE = "model.tflite"
EDGETPU_FILE = "model_edgetpu.tflite"
LABELS_FILE = "labels.txt"
CONFIG_FILE = "model.toml"
EDGETPU_SUFFIX = "_edgetpu"

#: Keys each model.toml table accepts; unknown keys there are refused (they are most likely typos).
_SECTION_KEYS: Dict[str, Tuple[str, ...]] = {
    "preprocess": ("resize", "mean", "std", "fill"),
    "classify": ("top_k", "threshold"),
    "detect": ("top_k", "threshold"),
    "embed": ("normalize",),
    "raw": (),
}
_TOP_KEYS = ("task", "name", "description", "labels")
#: Top-level keys holding an array of tables (``[[state]]``: see model/state.py).
_LIST_KEYS = ("state",)

PathLike = Union[str, Path]


@dataclass(frozen=True)
class PreprocessOptions:
    """How images are fed to the model (``[preprocess]`` in model.toml)."""

    resize: str = "bilinear"
    mean: Optional[Union[float, Tuple[float, ...]]] = None
    std: Optional[Union[float, Tuple[float, ...]]] = None
    fill: int = 0


@dataclass
class ModelBundle:
    """A validated model bundle: files, task, labels, preprocessing and tensor specs."""

    name: str
    path: Path
    model_path: Optional[Path]
    edgetpu_path: Optional[Path]
    labels_path: Optional[Path]
    config_path: Optional[Path]
    task: str
    task_inferred: bool
    labels: Dict[int, str] = field(default_factory=dict)
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    task_options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    inputs: List[TensorSpec] = field(default_factory=list)
    outputs: List[TensorSpec] = field(default_factory=list)
    output_names: List[str] = field(default_factory=list)
    description: str = ""
    #: Recurrent state pairs (``[[state]]`` in model.toml): inputs fed from outputs, frame after frame.
    state: Tuple[StatePair, ...] = ()

    @property
    def task_inputs(self) -> List[TensorSpec]:
        """The inputs a task feeds (the image), without the state inputs."""
        return task_inputs(self.state, self.inputs)

    @property
    def task_outputs(self) -> List[TensorSpec]:
        """The outputs a task reads (e.g. the four of a detection post-process), without the state outputs."""
        return task_outputs(self.state, self.outputs)

    @classmethod
    def load(
        cls,
        path: PathLike,
        labels: Optional[PathLike] = None,
        task: Optional[str] = None,
    ) -> "ModelBundle":
        """Load and validate a bundle folder or a single ``.tflite`` file.

        For a single file ``NAME.tflite`` the compiled twin ``NAME_edgetpu.tflite``
        is picked up when present; for ``NAME_edgetpu.tflite`` the CPU twin
        ``NAME.tflite``. Labels next to it (``NAME_labels.txt``, ``NAME.txt`` or
        ``labels.txt``) and ``NAME.toml`` are optional. ``labels`` and ``task``
        override what the bundle says.

        Raises:
            ModelError: missing or unreadable model files, a corrupt .tflite, twins
                that do not match, a bad model.toml, an unknown task, a task the
                model's tensors cannot serve, or an unreadable labels file.
        """
        path = Path(path)
        if path.is_dir():
            files = _folder_files(path)
        elif path.is_file():
            files = _single_file(path)
        elif not path.exists():
            raise ModelError(f"model path {path} does not exist")
        else:
            raise ModelError(f"model path {path} is neither a folder nor a file")
        name, model_path, edgetpu_path, labels_path, config_path = files
        config = _read_config(config_path) if config_path else {}
        if labels is not None:
            labels_path = Path(labels)
        elif "labels" in config:
            labels_path = _config_relative(config, "labels", (config_path or path).parent)
        if model_path is not None:
            model = _read_cpu_twin(model_path, edgetpu_path, lone=not path.is_dir())
        else:
            assert edgetpu_path is not None
            model = TfliteModel.read(edgetpu_path)
        if model_path and edgetpu_path:
            _check_twins(model, TfliteModel.read(edgetpu_path), model_path, edgetpu_path)
        inputs = [_spec(t) for t in model.inputs]
        outputs = _with_postprocess_shapes(model, [_spec(t) for t in model.outputs])
        output_names = _output_names(model)
        state = parse_state(config.get("state"), inputs, outputs, f"bundle {name}")
        chosen = task if task is not None else config.get("task")
        if chosen is None:
            chosen, inferred = infer_task(model, task_inputs(state, inputs), task_outputs(state, outputs)), True
            log.info("bundle %s: no task given, inferred %r from its tensors", name, chosen)
        else:
            inferred = False
        if not isinstance(chosen, str) or chosen not in TASKS:
            raise ModelError(f"bundle {name}: unknown task {chosen!r}; expected one of {', '.join(TASKS)}")
        bundle = cls(
            name=str(config.get("name", name)),
            path=path,
            model_path=model_path,
            edgetpu_path=edgetpu_path,
            labels_path=labels_path,
            config_path=config_path,
            task=chosen,
            task_inferred=inferred,
            labels=read_labels(labels_path) if labels_path else {},
            preprocess=_preprocess_options(config.get("preprocess", {}), name),
            task_options={t: dict(config.get(t, {})) for t in TASKS if t in config},
            inputs=inputs,
            outputs=outputs,
            output_names=output_names,
            description=str(config.get("description", model.description or "")),
            state=state,
        )
        bundle._check_task()
        return bundle

    def file_for(self, device_kind: str) -> Path:
        """The model file to run on a device of ``device_kind`` (``usb``, ``pci``, ``cpu``, ``mock``;
        ``usb:0`` style ids are accepted): the compiled file on an Edge TPU when the
        bundle has one, the CPU twin otherwise.

        Raises:
            ModelError: an unknown device kind, or a CPU/mock device and no CPU twin.
        """
        kind = str(device_kind).split(":", 1)[0].lower()
        if kind in ("usb", "pci"):
            chosen = self.edgetpu_path or self.model_path
        elif kind in ("cpu", "mock"):
            chosen = self.model_path
            if chosen is None:
                raise ModelError(
                    f"bundle {self.name} has only a compiled Edge TPU model ({self.edgetpu_path}); "
                    f"a {kind} device needs its CPU twin"
                )
        else:
            raise ModelError(f"unknown device kind {device_kind!r}; expected usb, pci, cpu or mock")
        assert chosen is not None
        return chosen

    def options_for(self, task: str) -> Dict[str, Any]:
        """The ``[task]`` table of model.toml (empty when absent)."""
        return dict(self.task_options.get(task, {}))

    def _check_task(self) -> None:
        """Refuse a task the model's tensors cannot serve, at load time rather than per request."""
        where = f"bundle {self.name}"
        if self.task in IMAGE_TASKS:
            images = self.task_inputs
            if len(images) != 1:
                state = f" besides its {len(self.state)} state input(s)" if self.state else ""
                raise ModelError(f"{where}: task {self.task} needs one image input, the model has "
                                 f"{len(images)}{state} (declare recurrent inputs in [[state]] of model.toml)")
            if any(p.input_index == 0 for p in self.state):
                raise ModelError(f"{where}: task {self.task} takes its image as input 0, which [[state]] declares "
                                 f"a state input ('{self.inputs[0].name}')")
            try:
                input_size(self.inputs[0])
            except ImageError as exc:
                raise ModelError(f"{where}: task {self.task} needs an image input: {exc}") from None
        if self.task == "detect":
            detection_layout(self.task_outputs, task_outputs(self.state, self.output_names))
        elif self.task == "classify" and not any(int(np.prod(s.shape)) > 1 for s in self.task_outputs):
            raise ModelError(f"{where}: task classify needs an output with more than one score")


def infer_task(model: TfliteModel, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str:
    """Guess the task when model.toml does not say.

    Only a model with one image input (``[1, H, W, 1|3]``) gets an image task:
    ``detect`` when it runs ``TFLite_Detection_PostProcess``; ``classify`` for one
    ``[1, N]`` output; ``embed`` for one ``[1, 1, 1, N]`` output. Anything else is ``raw``.
    """
    if len(inputs) != 1:
        return "raw"
    try:
        input_size(inputs[0])
    except ImageError:
        return "raw"
    try:
        if any(op.opcode == DETECTION_POSTPROCESS_OP for op in model.operators()):
            return "detect"
    except ModelError:
        pass
    if len(outputs) == 1:
        shape = tuple(outputs[0].shape)
        if len(shape) == 2 and shape[0] == 1 and shape[1] > 1:
            return "classify"
        if len(shape) == 4 and shape[:3] == (1, 1, 1) and shape[3] > 1:
            return "embed"
    return "raw"


def _spec(info: TensorInfo) -> TensorSpec:
    """TensorInfo's fields are already plain Python/numpy (tuple of ints, np.dtype, float, int)."""
    return TensorSpec(info.name, info.index, info.shape, info.dtype, info.scale, info.zero_point)


def _with_postprocess_shapes(model: TfliteModel, outputs: List[TensorSpec]) -> List[TensorSpec]:
    """Fill in the output shapes a detection post-process leaves to the runtime (see ``postprocess_shapes``)."""
    if all(s.shape for s in outputs):
        return outputs
    try:
        ops = [op for op in model.operators() if op.opcode == DETECTION_POSTPROCESS_OP]
    except ModelError:
        return outputs
    shapes: Dict[int, Tuple[int, ...]] = {}
    for op in ops:
        found = postprocess_shapes(op.custom_options)
        if found is not None:
            shapes.update(zip(op.outputs, found))
    return [dataclasses.replace(s, shape=shapes[s.index]) if not s.shape and s.index in shapes else s
            for s in outputs]


def _output_names(model: TfliteModel) -> List[str]:
    """Signature names of the outputs when the model has one signature, else tensor names."""
    names = [t.name for t in model.outputs]
    signatures = [s for s in model.signatures if s.subgraph == 0]
    if len(signatures) == 1:
        by_index = {index: key for key, index in signatures[0].outputs.items()}
        names = [by_index.get(t.index, t.name) for t in model.outputs]
    return names


def _read_cpu_twin(model_path: Path, edgetpu_path: Optional[Path], lone: bool) -> TfliteModel:
    """Read the CPU twin, saying it is the twin when a compiled file was given.

    A user who loads ``X_edgetpu.tflite`` may not know ``X.tflite`` beside it is read
    too: an error that only names ``X.tflite`` looks like the wrong file.

    Raises:
        ModelError: the twin cannot be read (the message names it as the CPU twin).
    """
    try:
        return TfliteModel.read(model_path)
    except ModelError as exc:
        if edgetpu_path is None:
            raise
        way_out = f"; or remove it to serve {edgetpu_path.name} on Edge TPUs only" if lone else ""
        raise ModelError(f"{model_path.name} is the CPU twin of the compiled {edgetpu_path.name} (CPU and mock "
                         f"devices run it, and the daemon reads the model's tensors from it), and it cannot be "
                         f"read: {exc}{way_out}") from exc


def _check_twins(cpu: TfliteModel, tpu: TfliteModel, cpu_path: Path, tpu_path: Path) -> None:
    """The compiled model must take and give the same tensors as its CPU twin."""
    for what, a, b in (("inputs", cpu.inputs, tpu.inputs), ("outputs", cpu.outputs, tpu.outputs)):
        sig_a = [(tuple(t.shape), np.dtype(t.dtype).name) for t in a]
        sig_b = [(tuple(t.shape), np.dtype(t.dtype).name) for t in b]
        if sig_a != sig_b:
            raise ModelError(
                f"{tpu_path.name} does not match its CPU twin {cpu_path.name}: {what} {sig_b} vs {sig_a}"
            )
    if not tpu.is_edgetpu_compiled:
        log.warning("%s has no edgetpu-custom-op: it will run on the CPU even with an Edge TPU", tpu_path)


def _folder_files(folder: Path) -> Tuple[str, Optional[Path], Optional[Path], Optional[Path], Optional[Path]]:
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        extra = f" (it has {EDGETPU_FILE}, but the CPU twin is required)" if (folder / EDGETPU_FILE).is_file() else ""
        raise ModelError(f"bundle {folder} has no {MODEL_FILE}{extra}")
    edgetpu = folder / EDGETPU_FILE
    labels = folder / LABELS_FILE
    config = folder / CONFIG_FILE
    return (
        folder.name,
        model_path,
        edgetpu if edgetpu.is_file() else None,
        labels if labels.exists() else None,
        config if config.exists() else None,
    )


def _single_file(file: Path) -> Tuple[str, Optional[Path], Optional[Path], Optional[Path], Optional[Path]]:
    if file.suffix != ".tflite":
        raise ModelError(f"{file} is not a .tflite file or a bundle folder")
    stem = file.stem
    if stem.endswith(EDGETPU_SUFFIX):
        base = stem[: -len(EDGETPU_SUFFIX)]
        twin = file.with_name(base + ".tflite")
        model_path, edgetpu_path = (twin if twin.is_file() else None), file
        if model_path is None:
            log.warning("%s has no CPU twin %s: it can run on an Edge TPU only", file, twin.name)
    else:
        base = stem
        compiled = file.with_name(base + EDGETPU_SUFFIX + ".tflite")
        model_path, edgetpu_path = file, (compiled if compiled.is_file() else None)
    labels = next(
        (p for p in (file.with_name(f"{base}_labels.txt"), file.with_name(f"{base}.txt"), file.with_name(LABELS_FILE))
         if p.exists()),
        None,
    )
    config = file.with_name(base + ".toml")
    return base, model_path, edgetpu_path, labels, config if config.exists() else None


def _read_config(path: Path) -> Dict[str, Any]:
    """Parse and shape-check model.toml.

    Raises:
        ModelError: unreadable, not TOML, or an unknown key in a known table.
    """
    try:
        with open(path, "rb") as fh:
            config = tomllib.load(fh)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid TOML: {exc}") from exc
    for key, value in config.items():
        if key in _SECTION_KEYS:
            if not isinstance(value, dict):
                raise ModelError(f"{path}: [{key}] must be a table")
            unknown = sorted(set(value) - set(_SECTION_KEYS[key]))
            if unknown:
                allowed = ", ".join(_SECTION_KEYS[key]) or "no keys"
                raise ModelError(f"{path}: unknown key(s) {unknown} in [{key}]; allowed: {allowed}")
        elif key not in _TOP_KEYS and key not in _LIST_KEYS:
            log.warning("%s: ignoring unknown key %r", path, key)
    for key in _TOP_KEYS:
        if key in config and not isinstance(config[key], str):
            raise ModelError(f"{path}: {key} must be a string")
    for task in ("classify", "detect"):
        opts = config.get(task, {})
        if "top_k" in opts and (not isinstance(opts["top_k"], int) or isinstance(opts["top_k"], bool) or opts["top_k"] < 1):
            raise ModelError(f"{path}: [{task}] top_k must be a positive integer")
        if "threshold" in opts and not _is_number(opts["threshold"]):
            raise ModelError(f"{path}: [{task}] threshold must be a number")
    if "normalize" in config.get("embed", {}) and not isinstance(config["embed"]["normalize"], bool):
        raise ModelError(f"{path}: [embed] normalize must be true or false")
    return config


def _config_relative(config: Mapping[str, Any], key: str, base: Path) -> Path:
    value = Path(config[key])
    return value if value.is_absolute() else base / value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _preprocess_options(table: Mapping[str, Any], name: str) -> PreprocessOptions:
    """Validate ``[preprocess]``.

    Raises:
        ModelError: unknown resize method, or mean/std/fill of the wrong type, or std 0.
    """
    resize = table.get("resize", "bilinear")
    if resize not in RESIZE_METHODS:
        raise ModelError(f"bundle {name}: unknown resize {resize!r}; expected one of {', '.join(RESIZE_METHODS)}")

    def numbers(key: str) -> Optional[Union[float, Tuple[float, ...]]]:
        if key not in table:
            return None
        value = table[key]
        if _is_number(value):
            return float(value)
        if isinstance(value, list) and value and all(_is_number(v) for v in value):
            return tuple(float(v) for v in value)
        raise ModelError(f"bundle {name}: [preprocess] {key} must be a number or a list of numbers")

    mean, std = numbers("mean"), numbers("std")
    if std is not None and 0.0 in (std if isinstance(std, tuple) else (std,)):
        raise ModelError(f"bundle {name}: [preprocess] std must not be zero")
    fill = table.get("fill", 0)
    if not isinstance(fill, int) or isinstance(fill, bool) or not 0 <= fill <= 255:
        raise ModelError(f"bundle {name}: [preprocess] fill must be an integer 0..255")
    return PreprocessOptions(resize=resize, mean=mean, std=std, fill=fill)

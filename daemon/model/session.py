"""In-process inference on one model bundle: the public library API.

A session is three steps, kept apart so the daemon can place them: ``preprocess``
(image -> input tensors, main process), ``invoke`` (an executor, maybe in a device
worker) and ``postprocess`` (output tensors -> answers, main process). The two
ends need only the tensor specs the bundle read from the .tflite file.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edgetpud.daemon.errors import ImageError, InvalidArgumentError, ModelError
from edgetpud.hal.errors import ModelRuntimeError
from edgetpud.hal.executor import Executor, TensorSpec
from edgetpud.hal.executor import open_executor as hal_open_executor

from . import adapters
from ..results import Class, DetectedObject
from .bundle import TASKS, ModelBundle
from .state import fill_state, task_outputs, with_state
from .preprocess import ImageTransform, crop, input_size, load_image, quantize_input, resize, to_channels

log = logging.getLogger(__name__)

#: Defaults when neither the caller nor model.toml gives an option.
DEFAULTS: Dict[str, Dict[str, Any]] = {
    "classify": {"top_k": 3, "threshold": 0.0},
    "detect": {"top_k": 25, "threshold": 0.4},
    "embed": {"normalize": False},
    "raw": {},
}
#: The options preprocessing takes; every other option is a postprocessing one (the service splits by it).
PREPROCESS_OPTIONS = ("resize", "roi", "mean", "std", "fill")


@dataclass(frozen=True)
class PreprocessContext:
    """What postprocessing needs to know about how the inputs were made."""

    task: str
    transform: Optional[ImageTransform] = None


class ModelSession:
    """Runs one bundle: preprocessing, an executor, postprocessing.

    Without an executor the two ends still work (they need only tensor specs);
    the first call that must invoke the model opens the CPU twin on the CPU.
    """

    def __init__(self, bundle: ModelBundle, executor: Optional[Executor] = None) -> None:
        self.bundle = bundle
        self._executor = executor
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ tensors

    @property
    def inputs(self) -> List[TensorSpec]:
        return list(self._executor.inputs) if self._executor is not None else list(self.bundle.inputs)

    @property
    def outputs(self) -> List[TensorSpec]:
        return list(self._executor.outputs) if self._executor is not None else list(self.bundle.outputs)

    @property
    def executor(self) -> Executor:
        """The executor, opening the CPU twin on first use when none was given.

        Raises:
            ModelError: the runtime refuses the model.
        """
        with self._lock:
            if self._executor is None:
                self._executor = open_executor(self.bundle, "cpu")
            return self._executor

    # ------------------------------------------------------------------ the three steps

    def preprocess(self, image: Any, task: Optional[str] = None, state: Optional[Sequence[np.ndarray]] = None,
                   **options: Any) -> Tuple[List[np.ndarray], PreprocessContext]:
        """Turn an image (path, bytes, PIL image or HxWxC uint8 array) into input tensors.

        For ``raw`` the "image" is a mapping of input names to arrays (or a list in
        input order). Options: ``resize`` (bilinear|nearest|letterbox), ``roi``
        (x, y, w, h crop first), ``mean``, ``std``, ``fill``; each defaults to the
        bundle's ``[preprocess]``. A model with recurrent state (``[[state]]``) gets
        ``state`` (the values carried from the previous frame) in its state inputs,
        or their initial values when ``state`` is None.

        Raises:
            ImageError: the image or tensors cannot be decoded or do not fit.
            ValueError: an unknown task or option.
        """
        task = self._task(task)
        unknown = sorted(set(options) - set(PREPROCESS_OPTIONS))
        if unknown:
            raise InvalidArgumentError(f"unknown preprocess option(s) {unknown}; allowed: {', '.join(PREPROCESS_OPTIONS)}")
        pairs = self.bundle.state
        if task == "raw":
            if pairs and isinstance(image, Mapping):
                image = fill_state(pairs, image, state)
            return adapters.raw_inputs(image, self.inputs), PreprocessContext(task)
        spec = self.inputs[0]
        prefs = self.bundle.preprocess
        pixels = load_image(image)  # a view: the resize output is a new array
        source_h, source_w = pixels.shape[:2]
        region = (0, 0, source_w, source_h)
        roi = options.get("roi")
        if roi is not None:
            if not isinstance(roi, (tuple, list)) or len(roi) != 4:
                raise ImageError(f"roi must be (x, y, width, height), got {roi!r}")
            region = tuple(roi)  # type: ignore[assignment]
            pixels = crop(pixels, *region)
        height, width = input_size(spec)
        resized, transform = resize(
            pixels, height, width, options.get("resize", prefs.resize), fill=options.get("fill", prefs.fill)
        )
        transform = replace(
            transform,
            source_width=source_w,
            source_height=source_h,
            region_x=region[0],
            region_y=region[1],
            region_width=region[2],
            region_height=region[3],
        )
        resized = to_channels(resized, int(spec.shape[-1]))
        tensor = quantize_input(resized, spec, options.get("mean", prefs.mean), options.get("std", prefs.std))
        tensors = with_state(pairs, len(self.inputs), [tensor], state) if pairs else [tensor]
        return tensors, PreprocessContext(task, transform)

    def invoke(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Run the model once on prepared inputs.

        Raises:
            ModelError: the runtime rejects the model or the inputs.
            DeviceIOError, DeviceUnavailableError: the device failed (HAL errors pass through).
        """
        try:
            return self.executor.invoke(list(inputs))
        except ModelRuntimeError as exc:
            raise ModelError(f"model {self.bundle.name}: {exc}") from exc

    def postprocess(
        self, task: Optional[str], outputs: Sequence[np.ndarray], context: Optional[PreprocessContext] = None, **options: Any
    ) -> Any:
        """Turn output tensors into the task's answer.

        classify -> list[Class]; detect -> list[DetectedObject]; embed -> 1-D float32
        array; raw -> {output name: array}. Options default to model.toml's
        ``[task]`` table, then to ``DEFAULTS``.

        Raises:
            ModelError: the outputs do not fit the task.
            ValueError: an unknown task or option, or a bad option value.
        """
        task = self._task(task)
        opts = self._options(task, options)
        specs = self.outputs
        names: Sequence[str] = self.bundle.output_names
        if self.bundle.state and task != "raw":  # the adapters see the task's outputs, not the state
            outputs, specs = task_outputs(self.bundle.state, outputs), task_outputs(self.bundle.state, specs)
            names = task_outputs(self.bundle.state, names)
        if task == "classify":
            return adapters.classify(outputs, specs, self.bundle.labels, int(opts["top_k"]), float(opts["threshold"]))
        if task == "detect":
            transform = context.transform if context is not None else None
            return adapters.detect(
                outputs, specs, self.bundle.labels, transform,
                float(opts["threshold"]), int(opts["top_k"]), names=names,
            )
        if task == "embed":
            return adapters.embed(outputs, specs, bool(opts["normalize"]))
        return adapters.raw_outputs(outputs, specs)

    def run(self, image: Any, task: Optional[str] = None, **options: Any) -> Any:
        """preprocess + invoke + postprocess; options are split between the two ends by name.

        Raises:
            ImageError, ModelError, ValueError: as the steps do.
        """
        pre = {k: v for k, v in options.items() if k in PREPROCESS_OPTIONS}
        post = {k: v for k, v in options.items() if k not in PREPROCESS_OPTIONS}
        inputs, context = self.preprocess(image, task, **pre)
        return self.postprocess(context.task, self.invoke(inputs), context, **post)

    # ------------------------------------------------------------------ conveniences

    def classify(
        self, image: Any, top_k: Optional[int] = None, threshold: Optional[float] = None, **options: Any
    ) -> List[Class]:
        """Top classes of ``image`` (defaults: model.toml, else top_k=3, threshold=0.0).

        Raises:
            ImageError: bad image. ModelError: the model fails or has no score output.
        """
        return self.run(image, "classify", top_k=top_k, threshold=threshold, **options)

    def detect(
        self, image: Any, threshold: Optional[float] = None, top_k: Optional[int] = None, **options: Any
    ) -> List[DetectedObject]:
        """Objects in ``image`` with boxes in its pixels (defaults: threshold=0.4, top_k=25).

        Raises:
            ImageError: bad image. ModelError: the model fails or is not a detector.
        """
        return self.run(image, "detect", threshold=threshold, top_k=top_k, **options)

    def embed(self, image: Any, normalize: Optional[bool] = None, **options: Any) -> np.ndarray:
        """The embedding vector of ``image`` (float32, optionally unit L2 norm).

        Raises:
            ImageError: bad image. ModelError: the model fails.
        """
        return self.run(image, "embed", normalize=normalize, **options)

    def invoke_raw(self, tensors: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]]) -> Dict[str, np.ndarray]:
        """Feed named input tensors as they are and return the outputs by name.

        Raises:
            ImageError: a missing/unknown name or a wrong dtype/shape. ModelError: the model fails.
        """
        return self.run(tensors, "raw")

    def close(self) -> None:
        """Release the executor (the session cannot invoke afterwards unless reopened on the CPU)."""
        with self._lock:
            if self._executor is not None:
                self._executor.close()
                self._executor = None

    def __enter__(self) -> "ModelSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _task(self, task: Optional[str]) -> str:
        chosen = task or self.bundle.task
        if chosen not in TASKS:
            raise InvalidArgumentError(f"unknown task {chosen!r}; expected one of {', '.join(TASKS)}")
        return chosen

    def _options(self, task: str, given: Mapping[str, Any]) -> Dict[str, Any]:
        allowed = DEFAULTS[task]
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise InvalidArgumentError(f"unknown {task} option(s) {unknown}; allowed: {', '.join(allowed) or 'none'}")
        merged = dict(allowed)
        merged.update(self.bundle.options_for(task))
        merged.update({k: v for k, v in given.items() if v is not None})  # None: not given
        return merged


def open_executor(bundle: ModelBundle, device: str = "cpu") -> Executor:
    """Open the bundle's right file on ``device`` (cpu, mock, usb[:N], pci[:N]).

    ``mock`` runs the CPU twin through the mock device's executor (imported only
    then); ``usb``/``pci`` load the Edge TPU delegate for the compiled file.

    Raises:
        ModelError: the runtime refuses the model, or the device spec is unknown.
        RuntimeMissingError, DelegateLoadError: no Edge TPU runtime or device (HAL errors).
    """
    kind = device.split(":", 1)[0].lower()
    path = bundle.file_for(kind)
    try:
        delegate = None
        if kind in ("usb", "pci"):
            from edgetpud.hal.runtime import load_edgetpu_delegate

            delegate = load_edgetpu_delegate(device if ":" in device else kind)
        executor = hal_open_executor(kind, path, bundle.model_path, delegate=delegate,
                                     device_id=device if ":" in device else "")
    except ModelRuntimeError as exc:
        raise ModelError(f"bundle {bundle.name}: {exc}") from exc
    _check_executor(bundle, executor, path)
    return executor


def _check_executor(bundle: ModelBundle, executor: Executor, path: Path) -> None:
    """The interpreter must see the tensors the bundle was validated with."""
    ours = [(tuple(s.shape), np.dtype(s.dtype)) for s in bundle.inputs + bundle.outputs]
    theirs = [(tuple(s.shape), np.dtype(s.dtype)) for s in list(executor.inputs) + list(executor.outputs)]
    if ours != theirs:
        executor.close()
        raise ModelError(f"{path.name}: the runtime reports tensors {theirs}, the file declares {ours}")


def load_model(
    path: Union[str, Path],
    device: str = "cpu",
    labels: Optional[Union[str, Path]] = None,
    task: Optional[str] = None,
    executor: Optional[Executor] = None,
) -> ModelSession:
    """Load a bundle folder or a .tflite file and open it on ``device`` (the library entry point).

    Example: ``load_model("models/mobilenet_v1_0.25_128").classify("cat.bmp")``.

    Raises:
        ModelError: the bundle is invalid or the runtime refuses the model.
        RuntimeMissingError, DelegateLoadError: an Edge TPU device was asked for but is unusable.
    """
    bundle = ModelBundle.load(path, labels=labels, task=task)
    return ModelSession(bundle, executor if executor is not None else open_executor(bundle, device))

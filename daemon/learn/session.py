"""``HeadSession``: a base model's session with a learned head on its embedding.

The base (the embedding extractor, or a classifier cut at its head's input) runs
wherever the daemon runs it — a device worker — and only the head runs here, in
NumPy, in the postprocessing step. So a head change never reloads the base on a
device, and ``embed`` keeps answering with the base's embedding.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgetpud.daemon.errors import InvalidArgumentError
from edgetpud.daemon.model import adapters
from edgetpud.daemon.results import Class
from edgetpud.daemon.model.session import DEFAULTS, ModelSession, PreprocessContext
from edgetpud.hal.executor import TensorSpec

from .head import LinearHead

#: The extra output a learned model's raw (KServe) answer carries: the head's probabilities.
SCORES_OUTPUT = "head/scores"

#: What a model with a head serves; classify is its default.
HEAD_TASKS: Tuple[str, ...] = ("classify", "embed", "raw")


class HeadSession:
    """Preprocessing and invocation of ``base``; postprocessing adds ``head`` for classify."""

    tasks = HEAD_TASKS
    default_task = "classify"

    def __init__(self, base: ModelSession, head: LinearHead) -> None:
        if not base.outputs:
            raise InvalidArgumentError("the base model has no output to take an embedding from")
        size = int(np.prod(base.outputs[0].shape))
        if size != head.dim:
            raise InvalidArgumentError(f"the head takes embeddings of {head.dim} values, the base gives {size}")
        self.base = base
        self.head = head
        self.bundle = base.bundle
        self._scores_spec = TensorSpec(name=SCORES_OUTPUT, index=len(base.outputs),
                                       shape=(1, head.num_classes), dtype=np.dtype(np.float32))

    @property
    def inputs(self) -> List[TensorSpec]:
        return self.base.inputs

    @property
    def outputs(self) -> List[TensorSpec]:
        """The base's outputs and the head's probabilities (what a raw request answers)."""
        return [*self.base.outputs, self._scores_spec]

    def preprocess(self, image: Any, task: Optional[str] = None, **options: Any) -> Tuple[List[np.ndarray], PreprocessContext]:
        task = self._task(task)
        if task == "raw":
            return self.base.preprocess(image, "raw", **options)
        inputs, context = self.base.preprocess(image, "embed", **options)
        return inputs, PreprocessContext(task, context.transform)

    def postprocess(self, task: Optional[str], outputs: Sequence[np.ndarray],
                    context: Optional[PreprocessContext] = None, **options: Any) -> Any:
        """classify -> list[Class] from the head; embed -> the base's embedding; raw -> tensors and scores."""
        task = self._task(task)
        if task == "embed":
            return self.base.postprocess("embed", outputs, context, **options)
        if task == "raw":
            named = self.base.postprocess("raw", outputs, context)
            named[SCORES_OUTPUT] = self.scores(outputs).reshape(1, -1)
            return named
        opts = self._classify_options(options)
        return top_classes(self.scores(outputs), self.head.labels, int(opts["top_k"]), float(opts["threshold"]))

    def scores(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """The head's probabilities (float32 [K]) for one invocation's outputs."""
        embedding = adapters.embed(outputs, self.base.outputs, normalize=False)
        return self.head.scores(embedding)[0]

    def invoke(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        return self.base.invoke(inputs)

    def _task(self, task: Optional[str]) -> str:
        chosen = task or self.default_task
        if chosen not in self.tasks:
            raise InvalidArgumentError(f"a model with a learned head serves {', '.join(self.tasks)}, not {chosen!r}")
        return chosen

    def _classify_options(self, given: Dict[str, Any]) -> Dict[str, Any]:
        allowed = DEFAULTS["classify"]
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise InvalidArgumentError(f"unknown classify option(s) {unknown}; allowed: {', '.join(allowed)}")
        merged = dict(allowed)
        merged.update(self.bundle.options_for("classify"))
        merged.update({k: v for k, v in given.items() if v is not None})
        return merged


def top_classes(scores: np.ndarray, labels: Sequence[str], top_k: int, threshold: float) -> List[Class]:
    """The best ``top_k`` classes at or above ``threshold``, best first (ties: lower id first), as classify orders them.

    Raises:
        InvalidArgumentError: ``top_k`` < 1 or a non-finite threshold.
    """
    adapters.check_top_k(top_k, threshold)
    scores = np.asarray(scores, np.float32).reshape(-1)
    order = np.lexsort((np.arange(scores.size), -scores))
    kept = [int(i) for i in order[:top_k] if scores[i] >= threshold]
    return [Class(i, labels[i], float(scores[i])) for i in kept]

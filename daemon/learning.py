"""Retraining served models: samples in, heads out, each head change a new model version.

``Learning`` is the service-side half of ``daemon/learn`` (which holds the plain
engines). It owns the store of samples and heads, turns labeled images into
embeddings on the devices (through the service's own inference path, so the base
runs on the Edge TPU), builds heads by imprinting or backpropagation, and hands
each new head to the registry, which swaps it in without failing a request.
Calls that change one model are serialised by that model's lock, so two clients
adding to one class are both counted.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import InvalidArgumentError, NotFoundError, PreconditionError, ResourceExhaustedError
from .learn import calibration, export as head_export, softmax_regression
from .learn.head import LinearHead
from .learn.imprinting import DEFAULT_SCALE, MAX_SAMPLES_PER_CLASS, ClassSums, check_embeddings, imprint_head
from .learn.session import HeadSession
from .learn.split import embedding_output, split_classifier
from .learn.store import Store, content_hash
from .model import ModelBundle, ModelSession
from .model.tflite import TfliteModel
from .registry import ModelVersion, Registry

log = logging.getLogger(__name__)

#: Longest label accepted (a label is shown in answers and written to exported labels.txt).
MAX_LABEL_CHARS = 128
#: Images of one AddSamples call embedded at once (each waits for room in the device queues).
EMBED_CONCURRENCY = 4
METHOD_IMPRINTING = "imprinting"
METHOD_BACKPROP = "backprop"
BASES_FOLDER = "bases"

#: Runs the served model's base on an image (an ImageInput, or encoded bytes) and returns its raw embedding.
Embed = Callable[[str, Any], Awaitable[np.ndarray]]
Run = Callable[..., Awaitable[Any]]


def check_label(label: Any) -> str:
    """A label becomes a class name in answers and a line of an exported labels.txt: keep it plain.

    Raises:
        InvalidArgumentError: empty, longer than ``MAX_LABEL_CHARS``, with control characters,
            a path separator, or leading/trailing spaces.
    """
    if not isinstance(label, str) or not label:
        raise InvalidArgumentError("a sample needs a label (the class name), e.g. --label cat")
    if len(label) > MAX_LABEL_CHARS:
        raise InvalidArgumentError(f"a label has at most {MAX_LABEL_CHARS} characters; this one has {len(label)}")
    if any(unicodedata.category(c)[0] == "C" for c in label):
        raise InvalidArgumentError(f"label {label!r} holds control characters; use printable text")
    if "/" in label or "\\" in label:
        raise InvalidArgumentError(f"label {label!r} holds a path separator ('/' or '\\\\'); labels name classes, "
                                   "and exported bundles write them to files")
    if label != label.strip():
        raise InvalidArgumentError(f"label {label!r} begins or ends with spaces")
    return label


@dataclass(frozen=True)
class Base:
    """What a model's head sits on: the bundle and session that give embeddings, and their identity."""

    bundle: ModelBundle
    session: ModelSession
    dim: int
    base_hash: str
    pretrained: Optional[LinearHead] = None  # a classifier's own head, cut off at its input


@dataclass(frozen=True)
class ClassView:
    id: int
    label: str
    samples: int
    source: str


@dataclass(frozen=True)
class LearnedView:
    """A model's head as it serves now (what the API answers)."""

    model: str
    version: int
    head_version: Optional[int]
    method: str
    classes: List[ClassView]


@dataclass
class SampleBatch:
    """Samples of one label: images to embed on the devices (with their bytes, kept for re-embedding)
    and embeddings given as they are."""

    label: str
    images: List[Any] = field(default_factory=list)
    blobs: List[Optional[bytes]] = field(default_factory=list)
    embeddings: List[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class TrainParams:
    epochs: Optional[int] = None
    learning_rate: Optional[float] = None
    batch_size: Optional[int] = None
    l2: Optional[float] = None
    validation_fraction: Optional[float] = None
    seed: Optional[int] = None
    warm_start: bool = False


@dataclass
class _ModelState:
    """In-memory learning state of one model: its lock, imprinted class sums and a running training."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sums: Optional[Dict[str, ClassSums]] = None  # loaded from the store on first use
    logit_sums: Dict[str, calibration.PretrainedLogits] = field(default_factory=dict)  # beside pretrained classes
    sums_hash: str = ""
    training: Optional[threading.Event] = None  # set to cancel


class Learning:
    """Samples, heads and their versions for every served model."""

    def __init__(self, store: Store, registry: Registry, state_dir: Path, run_blocking: Run,
                 embed: Embed) -> None:
        self._store = store
        self._registry = registry
        self._bases_dir = Path(state_dir) / "learning" / BASES_FOLDER
        self._run = run_blocking
        self._embed = embed
        self._models: Dict[str, _ModelState] = {}
        self._bases: Dict[Tuple[str, str, int, int], Base] = {}  # by model and file (path, size, mtime)
        self.stale: List[str] = []  # models whose stored head was made on another base

    def close(self) -> None:
        """Close the store (the daemon is stopping)."""
        self._store.close()

    def _state(self, model: str) -> _ModelState:
        return self._models.setdefault(model, _ModelState())

    # ---- the registry hook: a loading bundle gets its stored head back ----

    def adapt(self, name: str, bundle: ModelBundle, session: ModelSession) -> Tuple[ModelBundle, Any]:
        """Serve ``name``'s current head (if the store has one) on the freshly loaded bundle (blocking)."""
        record = self._store.current_head(name)
        if record is None:
            return bundle, session
        version, head, meta = record
        base = self._base(name, bundle, session)
        if meta.base_hash != base.base_hash:
            log.warning("model %s changed since its head was made: its samples are embedded again", name)
            self.stale.append(name)
        if head.dim != base.dim:
            log.warning("model %s: its stored head takes %d values, the model now gives %d: it serves without a "
                        "head until its samples are embedded again", name, head.dim, base.dim)
            return base.bundle, base.session
        return base.bundle, HeadSession(base.session, _numbered(head, version, meta.method))

    def _base(self, name: str, bundle: ModelBundle, session: Any) -> Base:
        """The embedding base of a bundle: itself for an embedding model, else the classifier cut at its head.

        A version already serving a cut classifier maps back to the Base it was cut for.

        Raises:
            PreconditionError: no usable embedding, or the head is inside a compiled model's custom op.
        """
        if isinstance(session, HeadSession):
            session = session.base
        source = bundle.model_path or bundle.edgetpu_path
        assert source is not None
        stat = Path(source).stat()
        key = (name, str(source), stat.st_size, stat.st_mtime_ns)
        cached = self._bases.get(key)
        if cached is not None:
            return cached
        if bundle.task not in ("embed", "classify"):
            raise PreconditionError(
                f"model {name} cannot learn classes: it serves {bundle.task}, and a head learns from the "
                "embedding of an image model (an embedding extractor, task embed, or a classifier whose head "
                "runs on the CPU)")
        base_hash = content_hash(source)
        model = TfliteModel.read(source)
        if bundle.task == "embed":
            try:
                _, dim = embedding_output(model)
            except PreconditionError as exc:
                raise PreconditionError(f"model {name} cannot learn classes: {exc}") from None
            base = Base(bundle, session, dim, base_hash)
        else:
            base = self._split(name, bundle, model, base_hash)
            cut = base.bundle.model_path or base.bundle.edgetpu_path
            assert cut is not None
            cut_stat = Path(cut).stat()
            self._bases[(name, str(cut), cut_stat.st_size, cut_stat.st_mtime_ns)] = base
        self._bases[key] = base
        return base

    def _split(self, name: str, bundle: ModelBundle, model: TfliteModel, base_hash: str) -> Base:
        """Cut a classifier (both twins) at its head's input and keep the cut files under the state folder."""
        compiled = TfliteModel.read(bundle.edgetpu_path) if bundle.edgetpu_path else None
        try:
            cpu = split_classifier(model, bundle.labels) if bundle.model_path else None
            tpu = split_classifier(compiled, bundle.labels, cpu_twin=model if bundle.model_path else None) \
                if compiled is not None else None
        except PreconditionError as exc:
            raise PreconditionError(f"model {name} cannot learn classes: {exc}") from None
        folder = self._bases_dir / f"{name}-{base_hash[:16]}"
        folder.mkdir(parents=True, exist_ok=True)
        for split, file in ((cpu, "model.tflite"), (tpu, "model_edgetpu.tflite")):
            if split is not None:
                _write_atomically(folder / file, split.base)
        first = cpu or tpu
        assert first is not None
        cut = ModelBundle.load(folder, task="embed")
        cut = dataclasses.replace(cut, name=bundle.name, preprocess=bundle.preprocess,
                                  task_options=bundle.task_options, description=bundle.description)
        return Base(cut, ModelSession(cut), first.dim, base_hash, pretrained=first.head)

    # ---- queries ----

    def _current(self, model: str) -> ModelVersion:
        return self._registry.current(model)

    def view(self, model: str) -> LearnedView:
        """The classes of ``model``'s head now, with their sample counts.

        Raises:
            NotFoundError: no such model is served.
        """
        mv = self._current(model)
        counts = self._store.class_counts(model)
        head: Optional[LinearHead] = mv.head
        if head is None:
            return LearnedView(model, mv.version, None, "", [])
        classes = [ClassView(i, label, counts.get(label, 0), source)
                   for i, (label, source) in enumerate(zip(head.labels, head.sources))]
        return LearnedView(model, mv.version, head.info.get("head_version"), str(head.info.get("method", "")),
                           classes)

    def heads(self, model: str) -> List[Any]:
        """Every stored head version of ``model``.

        Raises:
            NotFoundError: the model has no stored head.
        """
        heads = self._store.list_heads(model)
        if not heads:
            raise NotFoundError(f"model {model} has no learned head (add samples with 'edgetpuctl classes add')")
        return heads

    # ---- changes ----

    async def add_samples(self, model: str, batches: Sequence["SampleBatch"],
                          keep_classes: bool = False) -> Tuple[LearnedView, int]:
        """Imprint each batch's label from its images (embedded on the devices) and embeddings.

        All of the call's samples are stored, and the new head serves, in one durable step
        before this returns; on any error none is.

        Raises:
            InvalidArgumentError: a bad label or embedding, no sample. NotFoundError: no such model.
            PreconditionError: the model has no usable embedding. ResourceExhaustedError: a class
            would hold more than 200 samples, or the model's samples would exceed their size limit.
        """
        if not any(b.images or b.embeddings for b in batches):
            raise InvalidArgumentError("AddSamples received no sample: send images or embeddings after the label")
        merged: Dict[str, SampleBatch] = {}
        for batch in batches:
            check_label(batch.label)
            known = merged.setdefault(batch.label, SampleBatch(batch.label))
            known.images.extend(batch.images)
            known.blobs.extend(list(batch.blobs) + [None] * (len(batch.images) - len(batch.blobs)))
            known.embeddings.extend(batch.embeddings)
        state = self._state(model)
        async with state.lock:
            mv = self._current(model)
            base = await self._run(self._base, model, mv.bundle, mv.session)
            head = mv.head
            counts = await self._run(self._store.class_counts, model)
            for label, batch in merged.items():
                if head is not None and label in head.labels and \
                        head.sources[head.labels.index(label)] == "pretrained":
                    raise InvalidArgumentError(f"{label!r} is one of {model}'s pretrained classes; give the new "
                                               "class another name")
                total = counts.get(label, 0) + len(batch.images) + len(batch.embeddings)
                if total > MAX_SAMPLES_PER_CLASS:
                    raise ResourceExhaustedError(
                        f"class {label!r} of {model} would hold {total} samples; a class holds at most "
                        f"{MAX_SAMPLES_PER_CLASS} (remove it and add a better selection, or train by backprop "
                        "with the samples it has)")
            for batch in merged.values():  # checked before any device time is spent on images
                for e in batch.embeddings:
                    check_embeddings(np.asarray(e, np.float32).reshape(1, -1), base.dim)
            if base.pretrained is not None and not isinstance(mv.session, HeadSession):
                # A classifier serves its cut base from now on, so that images can be embedded on the devices.
                mv = await self._serve(model, base, base.pretrained, same_base=False)
            rows = []
            for label, batch in merged.items():
                vectors = await self._embed_all(model, batch.images)
                vectors += list(batch.embeddings)
                x = check_embeddings(_stack(vectors, base.dim), base.dim)
                rows.append((label, x, list(batch.blobs) + [None] * len(batch.embeddings)))
            sums = await self._sums(model, state, base)
            new_sums = {k: dataclasses.replace(v, normalized_sum=v.normalized_sum.copy(), raw_sum=v.raw_sum.copy())
                        for k, v in sums.items()}
            new_logits = {k: dataclasses.replace(v) for k, v in state.logit_sums.items()}
            for label, x, _ in rows:
                new_sums.setdefault(label, ClassSums.empty(base.dim)).add(x)
                if base.pretrained is not None:
                    new_logits.setdefault(label, calibration.PretrainedLogits()).add(base.pretrained, x)
            keep = self._keeps_pretrained(mv, base, keep_classes)
            new_head = self._imprinted_head(mv.head, base, new_sums, keep, new_logits)
            version = await self._run(self._store.add_samples_and_head, model, rows, base.base_hash,
                                      new_head, METHOD_IMPRINTING)
            state.sums, state.logit_sums = new_sums, new_logits
            await self._serve(model, base, _numbered(new_head, version, METHOD_IMPRINTING))
            return self.view(model), sum(len(x) for _, x, _ in rows)

    async def _embed_all(self, model: str, images: Sequence[Any]) -> List[np.ndarray]:
        """Embeddings of ``images``, a few in flight at a time so a large batch does not crowd out other callers."""
        gate = asyncio.Semaphore(EMBED_CONCURRENCY)

        async def one(image: Any) -> np.ndarray:
            async with gate:
                return np.asarray(await self._embed(model, image), np.float32).reshape(-1)
        return list(await asyncio.gather(*(one(image) for image in images)))

    def _keeps_pretrained(self, mv: ModelVersion, base: Base, keep_classes: bool) -> bool:
        head = mv.head
        if base.pretrained is None:
            return False
        if head is not None and head.info.get("head_version"):  # decided by the first call that made a head
            return bool(head.info.get("keep_classes"))
        return keep_classes

    def _imprinted_head(self, current: Optional[LinearHead], base: Base, sums: Mapping[str, ClassSums],
                        keep: bool, logit_sums: Mapping[str, calibration.PretrainedLogits]) -> LinearHead:
        """The head after an imprinting change: trained classes stay, imprinted ones are rebuilt from the sums."""
        if keep:
            assert base.pretrained is not None
            head = calibration.keep_pretrained(base.pretrained, sums, logit_sums)
            return dataclasses.replace(head, info={**head.info, "keep_classes": True})
        if current is not None and current.info.get("method") == METHOD_BACKPROP and current.normalize:
            trained = [label for label, source in zip(current.labels, current.sources) if source == "trained"]
            kept = current.with_classes([label for label in trained if label in sums])
            extra = {k: v for k, v in sums.items() if k not in kept.labels}
            info = {k: v for k, v in kept.info.items() if k != "head_version"}
            if not extra:
                return dataclasses.replace(kept, info=info)
            imprinted = imprint_head(extra)
            return LinearHead(np.concatenate([kept.weights, imprinted.weights], axis=1),
                              np.concatenate([kept.bias, imprinted.bias]), kept.labels + imprinted.labels,
                              kept.sources + imprinted.sources, True, {**info, "scale": DEFAULT_SCALE})
        head = imprint_head(sums)
        return dataclasses.replace(head, info={**head.info, "scale": DEFAULT_SCALE})

    async def _sums(self, model: str, state: _ModelState, base: Base) -> Dict[str, ClassSums]:
        """The imprinted classes' running sums, read from the store once per model and base."""
        if state.sums is None or state.sums_hash != base.base_hash:
            samples = await self._run(self._store.embeddings, model, base.base_hash)
            if base.pretrained is not None:
                state.sums, state.logit_sums = calibration.calibration_sums(base.pretrained, samples)
            else:
                state.sums, state.logit_sums = _sums_all(samples, base.dim), {}
            state.sums_hash = base.base_hash
        return state.sums

    async def _serve(self, model: str, base: Base, head: Optional[LinearHead], same_base: bool = True) -> ModelVersion:
        """Swap in ``head`` (None: the plain base) as the next version of ``model``."""
        def make(old: ModelVersion) -> Tuple[ModelBundle, Any]:
            if head is None:
                return base.bundle, base.session
            return base.bundle, HeadSession(base.session, head)
        await self._registry.replace_session(model, make, same_base=same_base)
        return self._current(model)

    async def remove_class(self, model: str, label: str) -> LearnedView:
        """Remove a learned class and its samples (a new head version).

        Raises:
            NotFoundError: no such model or class. InvalidArgumentError: the class is pretrained.
        """
        state = self._state(model)
        async with state.lock:
            mv = self._current(model)
            head = mv.head
            counts = await self._run(self._store.class_counts, model)
            if (head is None or label not in head.labels) and label not in counts:
                known = ", ".join(head.labels[:20]) if head is not None else "none"
                raise NotFoundError(f"model {model} has no class {label!r} (classes: {known})")
            if head is not None and label in head.labels and head.sources[head.labels.index(label)] == "pretrained":
                raise InvalidArgumentError(f"{label!r} is a pretrained class of {model}: it is part of the model's "
                                           "own head and cannot be removed")
            base = await self._run(self._base, model, mv.bundle, mv.session)
            sums = dict(await self._sums(model, state, base))
            sums.pop(label, None)
            logit_sums = {k: v for k, v in state.logit_sums.items() if k != label}
            keep = self._keeps_pretrained(mv, base, False)
            remaining = [l for l, s in zip(head.labels, head.sources) if l != label] if head is not None else []
            if not keep and not sums and not [l for l in remaining if l in sums]:
                new_head = None
            elif head is not None and head.info.get("method") == METHOD_BACKPROP:
                new_head = self._imprinted_head(head.with_classes([l for l in head.labels if l != label]), base,
                                                sums, keep, logit_sums)
            else:
                new_head = self._imprinted_head(head, base, sums, keep, logit_sums)
            method = str(new_head.info.get("method", METHOD_IMPRINTING)) if new_head is not None else METHOD_IMPRINTING
            version = await self._run(self._store.remove_class_and_set_head, model, label, new_head, method,
                                      base.base_hash)
            state.sums, state.logit_sums = sums, logit_sums
            await self._serve(model, base, _numbered(new_head, version, method) if new_head is not None else None)
            return self.view(model)

    async def train(self, model: str, params: TrainParams,
                    on_progress: Callable[[softmax_regression.Progress], None]) -> LearnedView:
        """Train the head by last-layer backpropagation over every stored sample; cancellable.

        Progress goes to ``on_progress`` on the event loop. Cancelling the awaiting task stops
        the training and keeps the served head.

        Raises:
            NotFoundError: no such model. PreconditionError: fewer than two classes with samples,
            a model that keeps pretrained classes, or a training already running.
            InvalidArgumentError: a bad hyperparameter.
        """
        state = self._state(model)
        if state.training is not None:
            raise PreconditionError(f"model {model} is being trained already; wait for it or cancel it")
        async with state.lock:
            mv = self._current(model)
            base = await self._run(self._base, model, mv.bundle, mv.session)
            if self._keeps_pretrained(mv, base, False) or (base.pretrained is not None and mv.head is None):
                raise PreconditionError(
                    f"model {model} keeps its pretrained classes, which have no samples here; backprop learns "
                    "every class from samples. Serve the embedding extractor (or the classifier without "
                    "--keep-classes) to train")
            samples = await self._run(self._store.embeddings, model, base.base_hash)
            warm = imprint_head(_sums_all(samples, base.dim)) if params.warm_start and len(samples) else None
            stop = threading.Event()
            state.training = stop
        loop = asyncio.get_running_loop()

        def progress(p: softmax_regression.Progress) -> None:
            loop.call_soon_threadsafe(on_progress, p)

        labels = [label for label, x in samples.items() for _ in range(x.shape[0])]
        x = np.concatenate(list(samples.values())) if samples else np.zeros((0, base.dim), np.float32)
        options = {k: v for k, v in (("learning_rate", params.learning_rate), ("batch_size", params.batch_size),
                                     ("epochs", params.epochs), ("l2", params.l2),
                                     ("validation_fraction", params.validation_fraction),
                                     ("seed", params.seed)) if v is not None}
        running = asyncio.ensure_future(self._run(lambda: softmax_regression.train(
            x, labels, classes=list(samples), warm_start=warm, on_progress=progress,
            should_stop=stop.is_set, **options)))
        try:
            result = await asyncio.shield(running)
        except asyncio.CancelledError:
            stop.set()  # the thread ends at its next step; the model is free again once it has
            await asyncio.wait({running})
            raise
        finally:
            state.training = None
        if result.stopped:
            raise asyncio.CancelledError()
        async with state.lock:
            trained = dataclasses.replace(result.head, info={**result.head.info, "method": METHOD_BACKPROP,
                                                             "params": {**options, "warm_start": params.warm_start}})
            # Classes added while it trained are imprinted beside the trained ones; removed ones are dropped.
            head = self._imprinted_head(trained, base, await self._sums(model, state, base), False, {})
            version = await self._run(self._store.add_head, model, head, METHOD_BACKPROP, base.base_hash)
            await self._serve(model, base, _numbered(head, version, METHOD_BACKPROP))
            return self.view(model)

    async def restore(self, model: str, head_version: int) -> LearnedView:
        """Serve a stored head version again (as a new model version).

        Raises:
            NotFoundError: no such model or head version. PreconditionError: the head does not fit the base.
        """
        state = self._state(model)
        async with state.lock:
            mv = self._current(model)
            base = await self._run(self._base, model, mv.bundle, mv.session)
            head, meta = await self._run(self._store.head, model, head_version)
            if head.dim != base.dim:
                raise PreconditionError(f"head version {head_version} of {model} takes {head.dim} values; "
                                        f"the model gives {base.dim}")
            await self._run(self._store.set_current, model, head_version)
            await self._serve(model, base, _numbered(head, head_version, meta.method))
            return self.view(model)

    async def export(self, model: str, target: str = "cpu") -> Tuple[bytes, LearnedView]:
        """The served head appended to the base as quantized TFLite ops (a file that runs without edgetpud).

        Raises:
            NotFoundError: no such model. PreconditionError: no head, a training is running, or no
            compiled base for ``target="edgetpu"``. InvalidArgumentError: an unknown target.
        """
        if target not in ("cpu", "edgetpu"):
            raise InvalidArgumentError(f"export target is 'cpu' or 'edgetpu', not {target!r}")
        state = self._state(model)
        if state.training is not None:
            raise PreconditionError(f"model {model} is being trained; export when the training ends (or cancel it)")
        async with state.lock:
            mv = self._current(model)
            head = mv.head
            if head is None:
                raise PreconditionError(f"model {model} has no learned head to export; add classes first")
            base_file = mv.bundle.model_path if target == "cpu" else mv.bundle.edgetpu_path
            if base_file is None:
                raise PreconditionError(f"model {model} has no {'CPU twin' if target == 'cpu' else 'compiled'} "
                                        "base to export onto")
            samples = await self._run(self._store.embeddings, model)
            x = np.concatenate(list(samples.values())) if samples else None
            exported = await self._run(head_export.append_head, Path(base_file).read_bytes(), head, x)
            data = await self._run(exported.to_bytes)
            return data, self.view(model)

    async def refresh_stale(self) -> None:
        """Embed again, on the new base, the samples of models whose files changed; rebuild their heads."""
        while self.stale:
            model = self.stale.pop()
            try:
                await self._reembed(model)
            except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
                log.error("model %s: its samples could not be embedded again: %s", model, exc)

    async def _reembed(self, model: str) -> None:
        state = self._state(model)
        async with state.lock:
            mv = self._current(model)
            base = await self._run(self._base, model, mv.bundle, mv.session)
            pending = await self._run(self._store.stale_samples, model, base.base_hash)
            vectors = [np.asarray(await self._embed(model, s.image), np.float32).reshape(-1)
                       for s in pending]
            if vectors:
                await self._run(self._store.update_embeddings, model, [s.id for s in pending], np.stack(vectors),
                                base.base_hash)
            state.sums = None
            sums = await self._sums(model, state, base)
            if not sums:
                return
            head = self._imprinted_head(None, base, sums, self._keeps_pretrained(mv, base, False), state.logit_sums)
            version = await self._run(self._store.add_head, model, head, METHOD_IMPRINTING, base.base_hash)
            await self._serve(model, base, _numbered(head, version, METHOD_IMPRINTING))
            log.info("model %s: %d sample(s) embedded again; head version %d serves", model, len(vectors), version)


def _numbered(head: LinearHead, version: int, method: str) -> LinearHead:
    return dataclasses.replace(head, info={**head.info, "head_version": int(version), "method": method})


def _stack(vectors: Sequence[np.ndarray], dim: int) -> np.ndarray:
    for v in vectors:
        if v.size != dim:
            raise InvalidArgumentError(f"an embedding of this model has {dim} values; got {v.size}")
    return np.stack(vectors).astype(np.float32)


def _sums_all(samples: Mapping[str, np.ndarray], dim: int) -> Dict[str, ClassSums]:
    """Imprinting sums per label of stored ``[N, D]`` embeddings."""
    out: Dict[str, ClassSums] = {}
    for label, x in samples.items():
        if len(x):
            out[label] = ClassSums.empty(dim)
            out[label].add(x)
    return out


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)

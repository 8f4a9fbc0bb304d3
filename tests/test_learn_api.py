"""Retraining through the running daemon (gRPC, the client library), on real models and photos.

Every bad input is refused with a status code that says what it is, and the daemon
keeps serving after it; heads survive a restart; an exported model answers as the
daemon does; a classifier keeps its pretrained answers beside imprinted classes.
"""
from __future__ import annotations

import itertools
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator, List

import grpc
import numpy as np
import pytest

from daemon_fixture import RealDaemon
from edgetpud.daemon.client import Client, ClientError
from edgetpud.daemon.model import load_model

pytestmark = pytest.mark.slow

EMBED = "embedding_extractor"
CLASSIFIER = "classifier"  # mobilenet_v1_0.25_128_quant, CPU twin only: its head runs on the CPU
COMPILED = "mobilenet_v1_0.25_128_quant"  # with its compiled twin, whose head is inside the custom op
LSTM = "lstm"
PHOTOS = ["bird.bmp", "cat.bmp", "dragonfly.bmp", "face.jpg", "grace_hopper.bmp", "hot_dog.jpg",
          "kite_and_cold.jpg", "owl.jpg", "parrot.jpg", "pets.jpg", "sunflower.bmp"]


def _lay_out_extra(models: Path, test_data: Path) -> None:
    folder = models / CLASSIFIER
    folder.mkdir(exist_ok=True)
    shutil.copyfile(test_data / "mobilenet_v1_0.25_128_quant.tflite", folder / "model.tflite")
    shutil.copyfile(test_data / "imagenet_labels.txt", folder / "labels.txt")
    folder = models / LSTM
    folder.mkdir(exist_ok=True)
    shutil.copyfile(test_data / "keras_lstm_mnist_ptq.tflite", folder / "model.tflite")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("learn-api")


def _start(workdir: Path, test_data: Path) -> RealDaemon:
    daemon = RealDaemon(workdir, test_data, bundles=[EMBED, COMPILED])
    _lay_out_extra(daemon.models_dir, test_data)
    return daemon.start()


@pytest.fixture(scope="module")
def daemon(workdir: Path, test_data: Path) -> Iterator[RealDaemon]:
    d = _start(workdir, test_data)
    yield d
    d.stop()


@pytest.fixture
def client(daemon: RealDaemon) -> Iterator[Client]:
    with Client(daemon.address, timeout=60) as c:
        yield c


def photo(test_data: Path, name: str) -> bytes:
    return (test_data / name).read_bytes()


def crops(test_data: Path, name: str, count: int, seed: int) -> List[np.ndarray]:
    """Augmented views of one photo (random crops, flips): several samples of one class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    with Image.open(test_data / name) as img:
        pixels = np.asarray(img.convert("RGB"))
    h, w = pixels.shape[:2]
    out = []
    for _ in range(count):
        ch, cw = int(h * rng.uniform(0.7, 0.95)), int(w * rng.uniform(0.7, 0.95))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        view = pixels[y:y + ch, x:x + cw]
        out.append(np.ascontiguousarray(view[:, ::-1] if rng.random() < 0.5 else view))
    return out


def refused(call, code: grpc.StatusCode, *words: str) -> str:
    with pytest.raises(ClientError) as info:
        call()
    assert info.value.code == code, info.value
    for word in words:
        assert word in info.value.message, info.value.message
    return info.value.message


class _Resumed:
    """A training's progress with its first item already read; ``close`` cancels the training."""

    def __init__(self, first: object, run: object) -> None:
        self._items = itertools.chain([first], run)
        self._run = run

    def __iter__(self) -> "_Resumed":
        return self

    def __next__(self) -> object:
        return next(self._items)

    def close(self) -> None:
        self._run.cancel()


def train_when_free(client: Client, model: str, **options) -> "_Resumed":
    """``client.train``, retried while a training the previous test cancelled is still winding down."""
    for _ in range(600):
        try:
            run = client.train(model, **options)
            first = next(iter(run))
        except ClientError as exc:
            if "being trained already" not in exc.message:
                raise
            time.sleep(0.05)
            continue
        return _Resumed(first, run)
    raise AssertionError(f"{model} stayed busy training")


def still_serving(client: Client, test_data: Path) -> None:
    assert client.classify(COMPILED, photo(test_data, "cat.bmp")).classes[0].id == 283


# ------------------------------------------------------------------ imprinting end to end


def test_imprinted_classes_answer_classify_and_embed_still_works(client: Client, test_data: Path) -> None:
    before = client.embed(EMBED, photo(test_data, "parrot.jpg")).embedding
    added = client.add_samples(EMBED, "parrot", images=crops(test_data, "parrot.jpg", 5, seed=1))
    assert [c.label for c in added.classes] == ["parrot"] and added.added == 5
    client.add_samples(EMBED, "sunflower", images=crops(test_data, "sunflower.bmp", 5, seed=2))
    client.add_samples(EMBED, "owl", images=crops(test_data, "owl.jpg", 5, seed=3))
    for name, label in (("parrot.jpg", "parrot"), ("sunflower.bmp", "sunflower"), ("owl.jpg", "owl")):
        result = client.classify(EMBED, photo(test_data, name))
        assert result.classes[0].label == label, (name, result.classes)
    listed = client.classes(EMBED)
    assert {(c.label, c.samples, c.source) for c in listed.classes} == {
        ("parrot", 5, "imprinted"), ("sunflower", 5, "imprinted"), ("owl", 5, "imprinted")}
    after = client.embed(EMBED, photo(test_data, "parrot.jpg")).embedding
    np.testing.assert_array_equal(before, after)


def test_each_head_change_is_a_new_version_and_old_heads_can_be_restored(client: Client, test_data: Path) -> None:
    start = client.classes(EMBED)
    client.add_samples(EMBED, "cat", images=[photo(test_data, "cat.bmp")])
    with_cat = client.classes(EMBED)
    assert int(with_cat.version) > int(start.version) and with_cat.head_version > start.head_version
    heads = client.heads(EMBED)
    assert heads[-1].current and heads[-1].head_version == with_cat.head_version
    restored = client.restore_head(EMBED, start.head_version)
    assert [c.label for c in restored.classes] == [c.label for c in start.classes]
    assert int(restored.version) > int(with_cat.version)
    assert "cat" not in [c.label for c in client.classify(EMBED, photo(test_data, "cat.bmp"), top_k=5).classes]
    client.restore_head(EMBED, with_cat.head_version)
    assert client.classify(EMBED, photo(test_data, "cat.bmp")).classes[0].label == "cat"


def test_a_head_swap_under_load_fails_no_request(client: Client, daemon: RealDaemon, test_data: Path) -> None:
    errors: List[BaseException] = []
    stop = threading.Event()
    image = photo(test_data, "owl.jpg")

    def hammer() -> None:
        with Client(daemon.address, timeout=60) as other:
            while not stop.is_set():
                try:
                    other.classify(EMBED, image)
                except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                    errors.append(exc)
    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(4):
            client.add_samples(EMBED, f"swap{i}", embeddings=[np.random.default_rng(i).random(1024)])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    for i in range(4):
        client.remove_class(EMBED, f"swap{i}")


def test_backprop_trains_warm_started_and_reports_progress(client: Client) -> None:
    model = "embedding_extractor"
    progress = list(client.train(model, epochs=5, seed=7, warm_start=True, validation_fraction=0.2))
    epochs = [p for p in progress if p.model is None]
    assert [p.epoch for p in epochs] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(p.loss) for p in epochs)
    final = progress[-1].model
    assert final is not None and final.method == "backprop"
    assert {c.source for c in final.classes} == {"trained"}
    again = list(client.train(model, epochs=5, seed=7, warm_start=True, validation_fraction=0.2))
    assert [p.loss for p in again if p.model is None] == [p.loss for p in epochs]  # same seed, same run


def test_export_answers_as_the_daemon_does(client: Client, test_data: Path, tmp_path: Path) -> None:
    exported = client.export(EMBED)
    path = tmp_path / "exported.tflite"
    path.write_bytes(exported.data)
    labels = exported.labels
    local = load_model(path)
    for name in PHOTOS:
        served = client.classify(EMBED, photo(test_data, name), top_k=len(labels)).classes
        ours = {c.id: c.score for c in local.classify(test_data / name, top_k=len(labels))}
        assert local.classify(test_data / name, top_k=1)[0].id == served[0].id, name
        for c in served:
            assert abs(ours.get(c.id, 0.0) - c.score) <= 2 / 256, (name, c)


# ------------------------------------------------------------------ keeping pretrained classes


def test_keep_classes_new_classes_win_on_their_photos_others_keep_their_answer(client: Client,
                                                                                test_data: Path) -> None:
    new = {"sunflower.bmp": "my sunflower", "dragonfly.bmp": "my dragonfly", "hot_dog.jpg": "my hot dog"}
    others = [p for p in PHOTOS if p not in new]
    before = {p: client.classify(CLASSIFIER, photo(test_data, p)).classes[0].id for p in others}
    for seed, (name, label) in enumerate(new.items()):
        client.add_samples(CLASSIFIER, label, images=crops(test_data, name, 8, seed=10 + seed), keep_classes=True)
    sources = {c.source for c in client.classes(CLASSIFIER).classes}
    assert sources == {"pretrained", "imprinted"}
    for name, label in new.items():
        assert client.classify(CLASSIFIER, photo(test_data, name)).classes[0].label == label, name
    for p in others:
        assert client.classify(CLASSIFIER, photo(test_data, p)).classes[0].id == before[p], p


def test_a_head_inside_the_compiled_custom_op_is_refused_saying_what_to_do(client: Client,
                                                                            test_data: Path) -> None:
    refused(lambda: client.add_samples(COMPILED, "x", images=[photo(test_data, "cat.bmp")], keep_classes=True),
            grpc.StatusCode.FAILED_PRECONDITION, "edgetpu-custom-op", "--intermediate_tensors")
    still_serving(client, test_data)


# ------------------------------------------------------------------ bad input


def test_unknown_model(client: Client, test_data: Path) -> None:
    refused(lambda: client.add_samples("nope", "x", embeddings=[np.ones(1024)]), grpc.StatusCode.NOT_FOUND, "nope")
    still_serving(client, test_data)


def test_a_model_without_a_usable_embedding(client: Client, test_data: Path) -> None:
    refused(lambda: client.add_samples(LSTM, "x", embeddings=[np.ones(10)]), grpc.StatusCode.FAILED_PRECONDITION,
            "cannot learn classes")
    still_serving(client, test_data)


@pytest.mark.parametrize("vector, words", [
    (np.ones(1000), ("1024",)),
    (np.full(1024, np.nan), ("NaN",)),
    (np.full(1024, np.inf), ("infinite",)),
])
def test_bad_embeddings(client: Client, test_data: Path, vector: np.ndarray, words: tuple) -> None:
    refused(lambda: client.add_samples(EMBED, "bad", embeddings=[vector]), grpc.StatusCode.INVALID_ARGUMENT, *words)
    assert "bad" not in [c.label for c in client.classes(EMBED).classes]
    still_serving(client, test_data)


@pytest.mark.parametrize("label, words", [
    ("", ("label",)),
    ("x" * 10_000, ("at most",)),
    ("a\x07b", ("control",)),
    ("cats/dogs", ("separator",)),
    ("..\\x", ("separator",)),
])
def test_bad_labels(client: Client, test_data: Path, label: str, words: tuple) -> None:
    refused(lambda: client.add_samples(EMBED, label, embeddings=[np.ones(1024)]),
            grpc.StatusCode.INVALID_ARGUMENT, *words)
    still_serving(client, test_data)


def test_sample_201_of_a_class_is_refused_and_nothing_of_the_call_is_kept(client: Client, test_data: Path) -> None:
    rng = np.random.default_rng(5)
    client.add_samples(EMBED, "full", embeddings=list(rng.random((200, 1024))))
    refused(lambda: client.add_samples(EMBED, "full", embeddings=[rng.random(1024)]),
            grpc.StatusCode.RESOURCE_EXHAUSTED, "200")
    assert {c.label: c.samples for c in client.classes(EMBED).classes}["full"] == 200
    client.remove_class(EMBED, "full")
    still_serving(client, test_data)


def test_training_with_one_class_or_no_samples(client: Client, daemon: RealDaemon, test_data: Path) -> None:
    refused(lambda: list(client.train(CLASSIFIER)), grpc.StatusCode.FAILED_PRECONDITION, "pretrained")
    fresh = "lonely"
    folder = daemon.models_dir / fresh
    folder.mkdir()
    shutil.copyfile(test_data / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", folder / "model.tflite")
    (folder / "model.toml").write_text('task = "embed"\n')
    client.load_model(fresh, str(folder))
    refused(lambda: list(client.train(fresh)), grpc.StatusCode.FAILED_PRECONDITION, "two classes")
    client.add_samples(fresh, "only", embeddings=[np.ones(1024)])
    refused(lambda: list(client.train(fresh)), grpc.StatusCode.FAILED_PRECONDITION, "two classes")
    still_serving(client, test_data)


def test_export_while_training_is_refused(client: Client, daemon: RealDaemon, test_data: Path) -> None:
    rng = np.random.default_rng(9)
    for label in ("t1", "t2"):
        client.add_samples(EMBED, label, embeddings=list(rng.random((200, 1024))))
    trained = [h.head_version for h in client.heads(EMBED) if h.method == "backprop"]
    run = train_when_free(client, EMBED, epochs=100_000, seed=1)  # minutes, unless cancelled
    try:
        next(run)  # training has begun
        refused(lambda: client.export(EMBED), grpc.StatusCode.FAILED_PRECONDITION, "trained")
    finally:
        run.close()
    still_serving(client, test_data)
    for label in ("t1", "t2"):
        client.remove_class(EMBED, label)
    assert [h.head_version for h in client.heads(EMBED) if h.method == "backprop"] == trained  # none made


def test_cancelling_a_training_stops_it_and_keeps_the_served_head(client: Client) -> None:
    rng = np.random.default_rng(10)
    for label in ("c1", "c2"):
        client.add_samples(EMBED, label, embeddings=list(rng.random((100, 1024))))
    head = client.classes(EMBED).head_version
    run = train_when_free(client, EMBED, epochs=100_000, seed=1)  # minutes, unless cancelled
    next(run)
    cancelled = time.monotonic()
    run.close()
    short = list(train_when_free(client, EMBED, epochs=1, seed=1))  # free again: the thread has stopped
    assert time.monotonic() - cancelled < 20
    assert short[-1].model is not None and short[-1].model.head_version == head + 1  # only the short run's head
    for label in ("c1", "c2"):
        client.remove_class(EMBED, label)


def test_a_class_added_while_training_still_serves_after_it(client: Client, daemon: RealDaemon) -> None:
    rng = np.random.default_rng(13)
    for label in ("r1", "r2"):
        client.add_samples(EMBED, label, embeddings=list(rng.random((100, 1024))))
    run = iter(train_when_free(client, EMBED, epochs=400, seed=2))
    next(run)  # training has begun
    client.add_samples(EMBED, "late", embeddings=list(rng.random((3, 1024))))
    final = [p for p in run][-1].model
    assert final is not None and "late" in [c.label for c in final.classes]
    sources = {c.label: c.source for c in client.classes(EMBED).classes}
    assert sources["late"] == "imprinted" and sources["r1"] == "trained"
    for label in ("r1", "r2", "late"):
        client.remove_class(EMBED, label)


def test_two_clients_adding_to_one_class_are_both_counted(client: Client, daemon: RealDaemon) -> None:
    rng = np.random.default_rng(11)
    batches = [list(rng.random((20, 1024))) for _ in range(2)]
    errors: List[BaseException] = []

    def add(batch: list) -> None:
        try:
            with Client(daemon.address, timeout=60) as other:
                other.add_samples(EMBED, "together", embeddings=batch)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=add, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {c.label: c.samples for c in client.classes(EMBED).classes}["together"] == 40
    client.remove_class(EMBED, "together")


def test_removing_a_class_that_does_not_exist(client: Client, test_data: Path) -> None:
    refused(lambda: client.remove_class(EMBED, "never-added"), grpc.StatusCode.NOT_FOUND, "never-added")
    still_serving(client, test_data)


def test_kserve_serves_a_learned_head_beside_the_base_output(client: Client, daemon: RealDaemon,
                                                             test_data: Path) -> None:
    """ModelInfer on a model with a head answers the base's outputs and the head's scores."""
    from edgetpud.protos.kserve import grpc_predict_v2_pb2 as kpb
    from edgetpud.protos.kserve import grpc_predict_v2_pb2_grpc as kgrpc

    client.add_samples(EMBED, "kserve owl", images=[photo(test_data, "owl.jpg")])
    client.add_samples(EMBED, "kserve cat", images=[photo(test_data, "cat.bmp")])
    local = load_model(test_data / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", task="embed")
    pixels, _ = local.preprocess(test_data / "owl.jpg", "embed")
    with grpc.insecure_channel(daemon.address) as channel:
        stub = kgrpc.GRPCInferenceServiceStub(channel)
        meta = stub.ModelMetadata(kpb.ModelMetadataRequest(name=EMBED), timeout=30)
        assert [o.name for o in meta.outputs][-1] == "head/scores"
        request = kpb.ModelInferRequest(model_name=EMBED, inputs=[kpb.ModelInferRequest.InferInputTensor(
            name=meta.inputs[0].name, datatype="UINT8", shape=list(pixels[0].shape))],
            raw_input_contents=[pixels[0].tobytes()])
        reply = stub.ModelInfer(request, timeout=30)
    names = [o.name for o in reply.outputs]
    scores = np.frombuffer(reply.raw_output_contents[names.index("head/scores")], np.float32)
    served = client.classify(EMBED, photo(test_data, "owl.jpg"), top_k=1).classes[0]
    assert int(np.argmax(scores)) == served.id
    assert abs(float(scores[served.id]) - served.score) < 1e-5
    for label in ("kserve owl", "kserve cat"):
        client.remove_class(EMBED, label)


# ------------------------------------------------------------------ restart (last: it restarts the daemon)


def test_a_restarted_daemon_serves_the_same_heads(daemon: RealDaemon, workdir: Path, test_data: Path) -> None:
    with Client(daemon.address, timeout=60) as c:
        before_embed = c.classes(EMBED)
        before_keep = c.classes(CLASSIFIER)
        answer = c.classify(EMBED, photo(test_data, "parrot.jpg")).classes[0]
    daemon.stop()
    again = _start(workdir, test_data)
    try:
        with Client(again.address, timeout=60) as c:
            after = c.classes(EMBED)
            assert [(x.label, x.samples, x.source) for x in after.classes] == \
                [(x.label, x.samples, x.source) for x in before_embed.classes]
            assert after.head_version == before_embed.head_version
            assert c.classes(CLASSIFIER).head_version == before_keep.head_version
            assert c.classify(EMBED, photo(test_data, "parrot.jpg")).classes[0].label == answer.label
    finally:
        again.stop()


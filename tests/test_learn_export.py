"""Exported heads as quantized TFLite ops: the graph, the bundle, and their scores against the float head."""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from edgetpud.daemon.errors import InvalidArgumentError, PreconditionError
from edgetpud.daemon.learn.calibration import calibration_sums, keep_pretrained
from edgetpud.daemon.learn.export import append_head, export_bundle, labels_text
from edgetpud.daemon.learn.head import LinearHead
from edgetpud.daemon.learn.imprinting import imprint_head, imprinted_classes
from edgetpud.daemon.learn.split import cut_at, embedding_output, split_classifier
from edgetpud.daemon.model import load_model
from edgetpud.daemon.model.builder import ModelBuilder
from edgetpud.daemon.model.labels import read_labels
from edgetpud.daemon.model.tflite import TfliteModel
from edgetpud.hal.runtime import EDGETPU_CUSTOM_OP

from learn_photos import PHOTOS, Embedder, new_class_crops

BUDGET = 2.0 / 256
EXTRACTOR = "mobilenet_v1_1.0_224_quant_embedding_extractor"
CLASSIFIER = "mobilenet_v1_0.25_128_quant"


def _scores(model: bytes, x: np.ndarray) -> np.ndarray:
    it = Interpreter(model_content=model)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    out = it.get_output_details()[0]
    assert out["dtype"] == np.uint8 and out["quantization"] == (1 / 256, 0)
    return it.get_tensor(out["index"])[0].astype(np.float64) / 256


def _compare(model: bytes, head: LinearHead, xs: List[np.ndarray], embeddings: List[np.ndarray]) -> float:
    """The largest score difference; fails on a different top-1."""
    worst = 0.0
    for x, e in zip(xs, embeddings):
        ours, want = _scores(model, x), head.scores(e)[0]
        assert int(np.argmax(ours)) == int(np.argmax(want)), (np.sort(want)[-3:], np.sort(ours)[-3:])
        worst = max(worst, float(np.abs(ours - want).max()))
    return worst


def _synthetic_base(d: int = 8) -> bytes:
    b = ModelBuilder()
    x = b.input("input", [1, 2, 2, 3], np.uint8, scale=1 / 128, zero_point=128)
    w = b.const("w", np.random.default_rng(1).integers(0, 255, (d, 1, 1, 3)).astype(np.uint8), scale=0.02,
                zero_point=128)
    b.output(b.average_pool2d(b.conv2d(x, w, scale=0.05, zero_point=0, activation="RELU6"), 2, 1))
    return b.build()


def _head(d: int, k: int, normalize: bool) -> LinearHead:
    rng = np.random.default_rng(k)
    return LinearHead(rng.normal(0, 1, (d, k)), rng.normal(0, 0.2, k), tuple(f"class {i}" for i in range(k)),
                      ("trained",) * k, normalize)


@pytest.mark.parametrize("normalize", [False, True])
def test_synthetic_export_runs_and_matches(normalize: bool) -> None:
    base = _synthetic_base()
    head = _head(8, 4, normalize)
    rng = np.random.default_rng(5)
    xs = [rng.integers(0, 255, (1, 2, 2, 3)).astype(np.uint8) for _ in range(20)]
    it = Interpreter(model_content=base)
    it.allocate_tensors()
    embeddings = []
    for x in xs:
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        embeddings.append(it.get_tensor(it.get_output_details()[0]["index"]).reshape(1, -1) * 0.05)
    model = append_head(base, head, np.concatenate(embeddings))
    ops = [op.opcode for op in model.operators()]
    assert ops[-4:] == ["FULLY_CONNECTED", "DEQUANTIZE", "SOFTMAX", "QUANTIZE"]  # one source: one FC
    assert (ops[2:4] == ["DEQUANTIZE", "L2_NORMALIZATION"]) == normalize
    assert model.outputs[0].shape == (1, 4)
    assert model.associated_files == {"labels.txt": labels_text(head.labels).encode()}
    assert _compare(model.to_bytes(), head, xs, embeddings) <= BUDGET


def test_refusals() -> None:
    with pytest.raises(PreconditionError, match="takes 9 values"):
        append_head(_synthetic_base(), _head(9, 2, True))
    b = ModelBuilder()
    x = b.input("x", [1, 8], np.float32)
    b.output(b.reshape(x, [1, 8]))
    with pytest.raises(PreconditionError, match="uint8 embedding"):
        append_head(b.build(), _head(8, 2, True))
    with pytest.raises(InvalidArgumentError, match="line break"):
        labels_text(["ok", "two\nlines"])
    with pytest.raises(InvalidArgumentError):
        append_head(_synthetic_base(), _head(8, 2, True), logits="float")


def _photo_inputs(test_data, model: str, base: bytes):
    embed = Embedder(test_data / f"{model}.tflite", base)
    session = load_model(test_data / f"{model}.tflite")
    xs = [session.preprocess(test_data / p, "classify")[0][0] for p in PHOTOS]
    return embed, xs, [embed(test_data / p)[None] for p in PHOTOS]


@pytest.fixture(scope="module")
def extractor(test_data):
    base = (test_data / f"{EXTRACTOR}.tflite").read_bytes()
    embed, xs, embeddings = _photo_inputs(test_data, EXTRACTOR, base)
    samples = {p.split(".")[0]: embed.crops(test_data / p)[:4] for p in PHOTOS}
    return base, xs, embeddings, samples


def test_imprinted_head_on_the_extractor(extractor, tmp_path) -> None:
    base, xs, embeddings, samples = extractor
    head = imprint_head(imprinted_classes(samples, 1024))
    seen = np.concatenate(list(samples.values()))
    worst = _compare(append_head(base, head, seen).to_bytes(), head, xs, embeddings)
    print(f"imprinted on the extractor: largest score difference {worst * 256:.2f}/256")
    assert worst <= BUDGET


def test_least_squares_head_on_the_extractor(extractor) -> None:
    base, xs, embeddings, samples = extractor
    labels = sorted(samples)
    x = np.concatenate([samples[k] for k in labels])
    y = np.repeat(np.eye(len(labels)), 4, axis=0) * 8.0 - 4.0
    features = LinearHead(np.zeros((1024, 1)), np.zeros(1), ("x",), ("trained",), True).features(x)
    weights = np.linalg.lstsq(features, y, rcond=None)[0]
    head = LinearHead(weights, np.zeros(len(labels)), tuple(labels), ("trained",) * len(labels), normalize=True)
    worst = _compare(append_head(base, head, x).to_bytes(), head, xs, embeddings)
    print(f"least-squares (normalize=True) on the extractor: largest score difference {worst * 256:.2f}/256")
    assert worst <= BUDGET


def _worst(base: bytes, head: LinearHead, seen: np.ndarray, xs, embeddings, **choice: str) -> float:
    model = append_head(base, head, seen, **choice).to_bytes()
    return max(float(np.abs(_scores(model, x) - head.scores(e)[0]).max()) for x, e in zip(xs, embeddings))


def test_quantized_l2norm_costs_more(extractor) -> None:
    """Why a float L2_NORMALIZATION: the uint8 kernel's fixed 1/128 output, measured."""
    base, xs, embeddings, samples = extractor
    head = imprint_head(imprinted_classes(samples, 1024))
    seen = np.concatenate(list(samples.values()))
    ours, quantized = (_worst(base, head, seen, xs, embeddings, normalization=n) for n in ("float", "uint8"))
    print(f"largest score difference /256: float L2Norm {ours * 256:.2f}, uint8 L2Norm {quantized * 256:.2f}")
    assert ours < quantized


@pytest.fixture(scope="module")
def classifier(test_data):
    split = split_classifier(test_data / f"{CLASSIFIER}.tflite", read_labels(test_data / "imagenet_labels.txt"))
    embed, xs, embeddings = _photo_inputs(test_data, CLASSIFIER, split.base)
    train, _ = new_class_crops(embed, test_data)
    head = keep_pretrained(split.head, *calibration_sums(split.head, train))
    return split, head, xs, embeddings, np.concatenate(list(train.values()) + embeddings)


def test_pretrained_and_imprinted_on_the_classifier(classifier, tmp_path) -> None:
    split, head, xs, embeddings, seen = classifier
    worst = _compare(append_head(split.base, head, seen).to_bytes(), head, xs, embeddings)
    print(f"pretrained+imprinted on {CLASSIFIER}: largest score difference {worst * 256:.2f}/256")
    assert worst <= BUDGET


def test_uint8_logits_miss_the_budget(classifier) -> None:
    """Why int16 logits: 256 levels over a 1004-class head's logit range, measured."""
    split, head, xs, embeddings, seen = classifier
    ours, uint8 = (_worst(split.base, head, seen, xs, embeddings, logits=t) for t in ("int16", "uint8"))
    print(f"largest score difference /256: int16 logits {ours * 256:.2f}, uint8 logits {uint8 * 256:.2f}")
    assert ours <= BUDGET < uint8


def test_bundle_loads_back_and_classifies(classifier, test_data, tmp_path) -> None:
    split, head, _, _, seen = classifier
    out = export_bundle(tmp_path / "retrained", split.base, head, embeddings=seen, description='my "model"')
    assert sorted(p.name for p in out.iterdir()) == ["labels.txt", "model.tflite", "model.toml"]
    with load_model(out) as session:
        assert session.bundle.task == "classify"
        top = session.classify(test_data / "sunflower.bmp", top_k=1)[0]
        assert top.label == "sunflower"
        assert session.classify(test_data / "cat.bmp", top_k=1)[0].label == "tiger cat"
    single = export_bundle(tmp_path / "one.tflite", split.base, head, embeddings=seen)
    files = TfliteModel.read(single).associated_files
    assert read_labels_text(files["labels.txt"])[1001] == "sunflower"


def read_labels_text(data: bytes) -> Dict[int, str]:
    from edgetpud.daemon.model.labels import parse_labels

    return parse_labels(data.decode("utf-8"))


def test_compiled_base_gets_the_head_after_the_edgetpu_op(extractor, test_data, tmp_path) -> None:
    base, _, _, samples = extractor
    head = imprint_head(imprinted_classes(samples, 1024))
    compiled = test_data / f"{EXTRACTOR}_edgetpu.tflite"
    out = export_bundle(tmp_path / "b", base, head, base_edgetpu=compiled,
                        embeddings=np.concatenate(list(samples.values())))
    cpu, tpu = TfliteModel.read(out / "model.tflite"), TfliteModel.read(out / "model_edgetpu.tflite")
    cpu_ops = [op.opcode for op in cpu.operators()]
    tpu_ops = [op.opcode for op in tpu.operators()]
    assert tpu_ops[0] == EDGETPU_CUSTOM_OP and tpu_ops[1:] == cpu_ops[-len(tpu_ops) + 1:]
    assert tpu.cpu_operators()[0].inputs[0] == embedding_output(compiled)[0]
    head_tensors = lambda m: [(t.name, t.shape, t.scale, t.zero_point) for t in m.tensors() if t.name.startswith("head/")]
    assert head_tensors(cpu) == head_tensors(tpu)
    for a, b in zip(cpu.tensors()[-7:], tpu.tensors()[-7:]):
        if a.is_constant:
            np.testing.assert_array_equal(cpu.tensor_data(a.index), tpu.tensor_data(b.index))
    with load_model(out) as session:  # the CPU twin runs; the bundle's twins agree
        assert session.bundle.edgetpu_path is not None
        assert session.classify(test_data / "owl.jpg", top_k=1)[0].label == "owl"


def test_compiled_classifier_head_cut_and_reexported_matches_twin(test_data) -> None:
    """A cut CPU twin plus an exported head runs the same graph as a compiled base would after its op."""
    split = split_classifier(test_data / f"{CLASSIFIER}.tflite")
    again = cut_at(split.base, embedding_output(split.base)[0])
    assert TfliteModel.read(again).outputs[0].name == split.embedding_name

"""Cutting a classifier at its head's input: synthetic edge cases and the real MobileNet."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from edgetpud.daemon.errors import PreconditionError
from edgetpud.daemon.learn.split import embedding_output, split_classifier
from edgetpud.daemon.model import load_model
from edgetpud.daemon.model.builder import ModelBuilder, quantize_array
from edgetpud.daemon.model.labels import read_labels
from edgetpud.daemon.model.tflite import TfliteModel
from edgetpud.hal.runtime import EDGETPU_CUSTOM_OP

pytestmark = pytest.mark.filterwarnings("ignore:Warning. Enabling .experimental_preserve_all_tensors")

EMB_SCALE = 0.05
D, K = 6, 3
RNG = np.random.default_rng(7)
W_FLOAT = RNG.normal(0, 0.5, (K, D))
B_FLOAT = RNG.normal(0, 0.3, K)
W_SCALE = float(np.ptp(W_FLOAT) / 255)
W_ZP = int(round(-W_FLOAT.min() / W_SCALE))


def _head(b: ModelBuilder, emb: int, kind: str, beta: float = 1.0) -> None:
    """Append a quantized FC or 1x1 conv head, an optional reshape and a softmax on ``emb``."""
    bias_scale = EMB_SCALE * W_SCALE
    bias = b.const("head/bias", np.round(B_FLOAT / bias_scale).astype(np.int32), scale=bias_scale, zero_point=0)
    if kind == "fc":
        w = b.const("head/w", quantize_array(W_FLOAT, W_SCALE, W_ZP), scale=W_SCALE, zero_point=W_ZP)
        logits = b.fully_connected(emb, w, bias, scale=0.05, zero_point=128)
    else:
        w = b.const("head/w", quantize_array(W_FLOAT.reshape(K, 1, 1, D), W_SCALE, W_ZP), scale=W_SCALE,
                    zero_point=W_ZP)
        logits = b.reshape(b.conv2d(emb, w, bias, scale=0.05, zero_point=128), [1, K])
    b.output(b.softmax(logits, beta=beta))


def classifier(kind: str = "conv", compiled: bool = False, beta: float = 1.0) -> bytes:
    """input -> (body or an edgetpu-custom-op) -> 'embedding' [1,1,1,D] or [1,D] -> head -> softmax."""
    b = ModelBuilder()
    shape = [1, 1, 1, D] if kind == "conv" else [1, D]
    x = b.input("input", [1, 4, 4, 3], np.uint8, scale=1 / 128, zero_point=128)
    if compiled:
        emb = b.tensor("embedding", shape, np.uint8, scale=EMB_SCALE, zero_point=0)
        b.custom(EDGETPU_CUSTOM_OP, [x], [emb], b"\0" * 8)
    else:
        w = b.const("body/w", RNG.integers(0, 255, (D, 1, 1, 3)).astype(np.uint8), scale=0.02, zero_point=128)
        feat = b.conv2d(x, w, scale=EMB_SCALE, zero_point=0, activation="RELU6")
        pooled = b.average_pool2d(feat, 4, 1)
        emb = pooled if kind == "conv" else b.reshape(pooled, [1, D])
        b.model.raw.subgraphs[0].tensors[emb].name = "embedding"
    _head(b, emb, kind, beta)
    return b.build()


def _run(model: bytes, x: np.ndarray, tensor: Optional[int] = None):
    it = Interpreter(model_content=model, experimental_preserve_all_tensors=tensor is not None)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(tensor if tensor is not None else it.get_output_details()[0]["index"])


@pytest.mark.parametrize("kind", ["fc", "conv"])
def test_split_synthetic_head(kind: str) -> None:
    model = classifier(kind)
    split = split_classifier(model, {0: "zero", 2: "two"})
    assert split.embedding_name == "embedding" and split.dim == D
    assert split.head.labels == ("zero", "1", "two")
    assert split.head.sources == ("pretrained",) * K and not split.head.normalize
    np.testing.assert_allclose(split.head.weights, W_FLOAT.T, atol=W_SCALE)
    np.testing.assert_allclose(split.head.bias, B_FLOAT, atol=EMB_SCALE * W_SCALE)
    base = TfliteModel.read(split.base)
    assert [op.opcode for op in base.operators()][-1] != "SOFTMAX"
    assert base.outputs[0].name == "embedding" and not any("head/" in t.name for t in base.tensors())
    assert len(split.base) < len(model)
    x = RNG.integers(0, 255, (1, 4, 4, 3)).astype(np.uint8)
    embedding = _run(split.base, x)
    np.testing.assert_array_equal(embedding, _run(model, x, split.embedding_index))
    scores = _run(model, x)[0] / 256.0
    ours = split.head.scores(embedding.astype(np.float32) * EMB_SCALE)[0]
    assert np.abs(ours - scores).max() < 0.03


def test_softmax_beta_is_folded_into_the_head() -> None:
    split = split_classifier(classifier("fc", beta=2.0))
    np.testing.assert_allclose(split.head.weights, 2 * W_FLOAT.T, atol=2 * W_SCALE)


def test_compiled_head_refused_with_what_to_do() -> None:
    b = ModelBuilder()
    x = b.input("input", [1, 4, 4, 3], np.uint8, scale=1 / 128, zero_point=128)
    out = b.tensor("scores", [1, K], np.uint8, scale=1 / 256, zero_point=0)
    b.custom(EDGETPU_CUSTOM_OP, [x], [out], b"\0" * 8)
    b.output(out)
    compiled = b.build()
    with pytest.raises(PreconditionError, match="edgetpu_compiler --intermediate_tensors") as info:
        split_classifier(compiled)
    assert "CPU twin" in str(info.value) and "model_edgetpu.tflite" in str(info.value)
    with pytest.raises(PreconditionError, match="--intermediate_tensors 'embedding'"):
        split_classifier(compiled, cpu_twin=classifier("conv"))


def test_compiled_body_with_cpu_head_splits_like_its_twin() -> None:
    compiled = split_classifier(classifier("conv", compiled=True))
    twin = split_classifier(classifier("conv"))
    assert compiled.embedding_name == twin.embedding_name == "embedding"
    base = TfliteModel.read(compiled.base)
    assert [op.opcode for op in base.operators()] == [EDGETPU_CUSTOM_OP]
    assert base.outputs[0].name == "embedding"
    np.testing.assert_allclose(compiled.head.weights, twin.head.weights)


def test_no_usable_embedding_refused() -> None:
    b = ModelBuilder()
    x = b.input("x", [1, 4, 4, 3], np.uint8, scale=1 / 128, zero_point=128)
    b.output(b.softmax(b.reshape(x, [1, 48])))
    with pytest.raises(PreconditionError, match="not from FULLY_CONNECTED"):
        split_classifier(b.build())
    b = ModelBuilder()
    x = b.input("x", [1, 4, 4, 3], np.uint8, scale=1 / 128, zero_point=128)
    b.output(b.reshape(x, [1, 48]), b.reshape(x, [1, 4, 12]))
    with pytest.raises(PreconditionError, match="2 outputs"):
        split_classifier(b.build())
    with pytest.raises(PreconditionError, match="2 outputs"):
        embedding_output(b.build())
    b = ModelBuilder()
    x = b.input("x", [1, 4, 4, 3], np.uint8, scale=1 / 128, zero_point=128)
    b.output(b.reshape(x, [1, 4, 12]))
    with pytest.raises(PreconditionError, match="not an embedding"):
        embedding_output(b.build())


def test_embedding_output_of_real_extractor(test_data) -> None:
    index, dim = embedding_output(test_data / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    assert dim == 1024
    m = TfliteModel.read(test_data / "mobilenet_v1_1.0_224_quant_embedding_extractor_edgetpu.tflite")
    assert embedding_output(m) == (m.output_indices()[0], 1024)


def test_lstm_has_no_usable_embedding(test_data) -> None:
    with pytest.raises(PreconditionError, match="not SOFTMAX"):
        split_classifier(test_data / "keras_lstm_mnist_ptq.tflite")


def test_real_compiled_classifier_refused_naming_the_tensor(test_data) -> None:
    with pytest.raises(PreconditionError, match="--intermediate_tensors 'MobilenetV1/Logits/AvgPool_1a/AvgPool'"):
        split_classifier(test_data / "mobilenet_v1_0.25_128_quant_edgetpu.tflite",
                         cpu_twin=test_data / "mobilenet_v1_0.25_128_quant.tflite")


PHOTOS = ("cat.bmp", "bird.bmp", "parrot.jpg", "sunflower.bmp", "dragonfly.bmp", "grace_hopper.bmp", "owl.jpg",
          "hot_dog.jpg", "face.jpg", "pets.jpg", "kite_and_cold.jpg")


def test_real_classifier_split(test_data) -> None:
    path = test_data / "mobilenet_v1_0.25_128_quant.tflite"
    split = split_classifier(path, read_labels(test_data / "imagenet_labels.txt"))
    assert split.embedding_name == "MobilenetV1/Logits/AvgPool_1a/AvgPool" and split.dim == 256
    assert split.head.labels[283] == "tiger cat" and split.head.num_classes == 1001
    base = TfliteModel.read(split.base)
    assert base.outputs[0].shape == (1, 1, 1, 256) and not base.associated_files
    assert [op.opcode for op in base.operators()].count("CONV_2D") == 14  # the head's 1x1 conv is gone
    session = load_model(path)
    worst = 0.0
    for photo in PHOTOS:
        (x,), _ = session.preprocess(test_data / photo, "classify")
        embedding = _run(split.base, x)
        np.testing.assert_array_equal(embedding, _run(path.read_bytes(), x, split.embedding_index))
        scores = _run(path.read_bytes(), x)[0] / 256.0
        ours = split.head.scores(embedding.astype(np.float32) * base.outputs[0].scale)[0]
        assert int(np.argmax(ours)) == int(np.argmax(scores)), photo
        worst = max(worst, float(np.abs(ours - scores).max()))
    # the original's own uint8 logits (scale 0.13) and scores (1/256) are what separates the two
    assert worst < 0.02, worst

"""The public library API on real Coral models: load_model(...).classify/embed/invoke_raw and bad input."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetpud.daemon.errors import ImageError, InvalidArgumentError, ModelError
from edgetpud.daemon.model import Class, ModelBundle, ModelSession, TfliteModel, load_model
from edgetpud.daemon.model.preprocess import decode_image

SMALL = "mobilenet_v1_0.25_128_quant"
MEDIUM = "mobilenet_v1_0.5_160_quant"
EMBED = "mobilenet_v1_1.0_224_quant_embedding_extractor"


@pytest.fixture(scope="module")
def small(test_data: Path) -> ModelSession:
    session = load_model(test_data / f"{SMALL}.tflite", labels=test_data / "imagenet_labels.txt")
    yield session
    session.close()


@pytest.fixture(scope="module")
def cat(test_data: Path) -> np.ndarray:
    return np.asarray(Image.open(test_data / "cat.bmp").convert("RGB"))


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    """``array`` as PNG bytes, as image ``mode`` when given.

    Pillow infers the mode from dtype and shape and deprecates the ``mode`` argument of
    ``fromarray``, so the mode is applied with ``convert`` (a copy when it already matches).
    """
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- Coral's expectations


@pytest.mark.parametrize(
    "model, expected_id, label, min_score, measured",
    [
        (SMALL, 283, "tiger cat", 0.25, 0.320),
        (MEDIUM, 286, "Egyptian cat", 0.51, 0.605),
    ],
)
def test_classify_cat_matches_coral(test_data: Path, model, expected_id, label, min_score, measured):
    with load_model(test_data / f"{model}.tflite", labels=test_data / "imagenet_labels.txt") as session:
        classes = session.classify(test_data / "cat.bmp", top_k=3)
    assert len(classes) == 3 and all(isinstance(c, Class) for c in classes)
    assert [c.score for c in classes] == sorted((c.score for c in classes), reverse=True)
    hit = next(c for c in classes if c.id == expected_id)
    assert hit.label == label
    assert hit.score >= min_score
    assert hit.score == pytest.approx(measured, abs=0.002)  # TF-style bilinear reproduces Coral's numbers
    assert classes[0].id == expected_id


def test_classify_through_a_bundle_folder(test_data: Path, tmp_path: Path):
    folder = tmp_path / "mnv1"
    folder.mkdir()
    shutil.copy(test_data / f"{MEDIUM}.tflite", folder / "model.tflite")
    shutil.copy(test_data / f"{MEDIUM}_edgetpu.tflite", folder / "model_edgetpu.tflite")
    shutil.copy(test_data / "imagenet_labels.txt", folder / "labels.txt")
    (folder / "model.toml").write_text('task = "classify"\n[classify]\ntop_k = 1\n')
    with load_model(folder) as session:
        assert session.bundle.file_for("cpu") == folder / "model.tflite"
        classes = session.classify(str(test_data / "cat.bmp"))
        assert [(c.id, c.label) for c in classes] == [(286, "Egyptian cat")]
        assert len(session.classify(test_data / "cat.bmp", top_k=2)) == 2


def test_all_image_kinds_give_the_same_answer(small: ModelSession, test_data: Path, cat: np.ndarray):
    from_path = small.classify(test_data / "cat.bmp")
    assert small.classify((test_data / "cat.bmp").read_bytes()) == from_path
    assert small.classify(cat) == from_path
    assert small.classify(Image.fromarray(cat)) == from_path


def test_threshold_and_pillow_resize_contrast(small: ModelSession, cat: np.ndarray):
    assert small.classify(cat, top_k=10, threshold=0.3)[0].id == 283
    assert all(c.score >= 0.3 for c in small.classify(cat, top_k=10, threshold=0.3))
    # Pillow's antialiasing BILINEAR loses most of the score: the resize is part of the model's contract.
    pil = np.asarray(Image.fromarray(cat).resize((128, 128), Image.BILINEAR))
    pil_score = next((c.score for c in small.classify(pil, top_k=5) if c.id == 283), 0.0)
    assert pil_score < 0.25


def test_letterbox_and_roi_options(small: ModelSession, cat: np.ndarray):
    inputs, context = small.preprocess(cat, "classify", resize="letterbox")
    assert inputs[0].shape == (1, 128, 128, 3)
    assert context.transform.pad_x == 0 and context.transform.scale_x == pytest.approx(0.25)
    assert inputs[0][0, 90:].max() == 0  # the padding below the 512x341 image
    inputs, context = small.preprocess(cat, "classify", roi=(100, 50, 200, 200))
    assert context.transform.region_x == 100 and context.transform.region_width == 200
    with pytest.raises(ImageError, match="roi must be"):
        small.preprocess(cat, "classify", roi=(1, 2, 3))
    with pytest.raises(ImageError, match="outside"):
        small.preprocess(cat, "classify", roi=(500, 0, 100, 100))
    with pytest.raises(ImageError, match="fill"):
        small.preprocess(cat, "classify", resize="letterbox", fill=300)
    with pytest.raises(ImageError, match="unknown resize"):
        small.preprocess(cat, "classify", resize="area")
    with pytest.raises(InvalidArgumentError, match="unknown preprocess option"):
        small.preprocess(cat, "classify", colour="blue")
    with pytest.raises(InvalidArgumentError, match="unknown classify option"):
        small.classify(cat, normalize=True)


def test_embedding_extractor(test_data: Path):
    with load_model(test_data / f"{EMBED}.tflite") as session:
        assert session.bundle.task == "embed"
        vector = session.embed(test_data / "cat.bmp")
        assert vector.shape == (1024,) and vector.dtype == np.float32
        assert vector.min() >= 0.0
        assert vector.max() <= 255 * 0.02353 + 1e-3
        unit = session.embed(test_data / "cat.bmp", normalize=True)
        assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(unit, vector / np.linalg.norm(vector), rtol=1e-5)


def test_invoke_raw_split_concat(test_data: Path):
    with load_model(test_data / "tools" / "split_concat.tflite") as session:
        assert session.bundle.task == "raw"
        rng = np.random.default_rng(3)  # every input value distinct enough to tell the channels apart
        tensors = {s.name: rng.integers(0, 256, s.shape, dtype=s.dtype) for s in session.inputs}
        outputs = session.invoke_raw(tensors)
        assert set(outputs) == {s.name for s in session.outputs}
        # the graph concatenates input1 (3 channels), rnn1 (1) and rnn2 (2) into six channels, splits them
        # one by one, and sends some on: all with one scale and zero point, so values pass unchanged
        channels = np.concatenate([tensors["input1"], tensors["inputs/rnn1"], tensors["inputs/rnn2"]], axis=-1)
        expected = {
            "concat/split0": channels[..., [0]],
            "concat/split2": channels[..., [2]],
            "concat/split4": channels[..., [4]],
            "outputs/rnn1": channels[..., [1]],
            "outputs/rnn2": channels[..., [3, 5]],
        }
        for name, want in expected.items():
            assert outputs[name].dtype == np.uint8
            np.testing.assert_array_equal(outputs[name], want, err_msg=name)
        with pytest.raises(ImageError, match="missing"):
            session.invoke_raw({"input1": tensors["input1"]})
        wrong = dict(tensors, input1=tensors["input1"].astype(np.float32))
        with pytest.raises(ImageError, match="dtype uint8"):
            session.invoke_raw(wrong)


def test_split_preprocess_and_postprocess_without_executor(test_data: Path, small: ModelSession, cat: np.ndarray):
    bundle = ModelBundle.load(test_data / f"{SMALL}_edgetpu.tflite", labels=test_data / "imagenet_labels.txt")
    ends = ModelSession(bundle)  # no interpreter: only specs, as the daemon's main process uses it
    inputs, context = ends.preprocess(cat)
    outputs = small.invoke(inputs)  # the middle step, as a device worker would run it
    assert ends.postprocess(None, outputs, context) == small.classify(cat)
    assert ends._executor is None


def test_mock_device_runs_the_cpu_twin(test_data: Path):
    with load_model(test_data / f"{MEDIUM}_edgetpu.tflite", device="mock:0") as session:
        assert type(session.executor).__name__ == "MockTpuExecutor"
        assert session.classify(test_data / "cat.bmp")[0].id == 286
    with pytest.raises(ModelError, match="unknown device kind"):
        load_model(test_data / f"{MEDIUM}.tflite", device="tpu")


def test_edgetpu_device_without_libedgetpu_is_a_hal_error(test_data: Path):
    import ctypes.util

    from edgetpud.hal.errors import HalError

    if ctypes.util.find_library("edgetpu"):
        pytest.skip("libedgetpu is installed here: an attached Edge TPU would load")

    with pytest.raises(HalError):  # RuntimeMissingError here; DelegateLoadError where the library exists
        load_model(test_data / f"{SMALL}.tflite", device="usb:0")


def test_public_exports():
    import edgetpud.daemon.model as model

    assert {"Class", "DetectedObject", "ModelBundle", "ModelSession", "TfliteModel", "load_model"} <= set(model.__all__)
    for name in model.__all__:
        assert getattr(model, name).__name__ == name, name
    namespace: dict = {}
    exec("from edgetpud.daemon.model import *", namespace)
    assert set(model.__all__) <= set(namespace)
    assert (model.TfliteModel, model.load_model, model.ModelSession) == (TfliteModel, load_model, ModelSession)


# ----------------------------------------------------------------------------- bad models


def test_model_with_an_unknown_custom_op(test_data: Path):
    with pytest.raises(ModelError, match="unresolved custom op: fake-op-double"):
        load_model(test_data / "invalid_models" / "model_invoking_error.tflite")


@pytest.mark.parametrize("kind", ["truncated", "random"])
def test_corrupt_model_files(test_data: Path, tmp_path: Path, kind: str):
    data = (test_data / f"{SMALL}.tflite").read_bytes()
    path = tmp_path / "bad.tflite"
    path.write_bytes(data[:1000] if kind == "truncated" else bytes(np.random.default_rng(4).integers(0, 256, 3000, dtype=np.uint8)))
    with pytest.raises(ModelError):
        load_model(path)


def test_compiled_model_needs_an_edgetpu(test_data: Path, tmp_path: Path):
    lone = tmp_path / "m_edgetpu.tflite"
    shutil.copy(test_data / f"{SMALL}_edgetpu.tflite", lone)
    with pytest.raises(ModelError, match="needs its CPU twin"):
        load_model(lone, device="cpu")


# ----------------------------------------------------------------------------- bad and unusual images


def test_not_an_image_and_empty_file(small: ModelSession, tmp_path: Path):
    text = tmp_path / "cat.jpg"
    text.write_text("definitely not a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="not a"):
        small.classify(text)
    with pytest.raises(ImageError, match="empty"):
        small.classify(empty)


def test_unusual_but_valid_images(small: ModelSession, tmp_path: Path, cat: np.ndarray):
    one = small.classify(png(np.array([[[10, 200, 30]]], dtype=np.uint8)))
    assert len(one) == 3
    gray = np.asarray(Image.fromarray(cat).convert("L"))
    assert small.classify(png(gray, "L"))[0].score > 0
    rgba = np.dstack([cat, np.full(cat.shape[:2], 128, np.uint8)])
    assert small.classify(png(rgba, "RGBA")) == small.classify(cat)
    wide = (cat[:, :, 0].astype(np.uint16) * 257)
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    assert small.classify(path) == small.classify(png(cat[:, :, 0], "L"))


def test_exif_rotated_jpeg_is_classified_upright(small: ModelSession, tmp_path: Path, cat: np.ndarray):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated 90 degrees clockwise; the viewer turns it back counter-clockwise
    Image.fromarray(cat).transpose(Image.Transpose.ROTATE_270).save(path, "JPEG", exif=exif, quality=95)
    decoded = decode_image(path)
    assert decoded.shape == cat.shape
    assert np.abs(decoded.astype(int) - cat.astype(int)).mean() < 3  # upright again, up to JPEG loss
    assert small.classify(path)[0].id == small.classify(cat)[0].id


@pytest.mark.parametrize(
    "array",
    [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10), np.uint8), np.zeros((1, 10, 10, 3), np.uint8),
     np.zeros((10, 10, 5), np.uint8)],
)
def test_raw_arrays_of_wrong_shape_or_dtype(small: ModelSession, array: np.ndarray):
    with pytest.raises(ImageError):
        small.classify(array)

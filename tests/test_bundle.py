"""Model bundles: folder and single-file layouts, model.toml validation, task inference, file choice."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bundles import make_bundle
from edgetpud.daemon.errors import ModelError
from edgetpud.daemon.model.bundle import ModelBundle, PreprocessOptions
from edgetpud.daemon.model.tflite import TfliteModel

SMALL = "mobilenet_v1_0.25_128_quant"
EMBED = "mobilenet_v1_1.0_224_quant_embedding_extractor"


def test_folder_bundle_with_inferred_task(test_data: Path, tmp_path: Path):
    bundle = ModelBundle.load(make_bundle(tmp_path, test_data, "mnv1", compiled=True))
    assert bundle.name == "mnv1"
    assert bundle.task == "classify" and bundle.task_inferred
    assert bundle.labels[286] == "Egyptian cat"
    assert bundle.preprocess == PreprocessOptions()
    assert [s.shape for s in bundle.inputs] == [(1, 128, 128, 3)]
    assert bundle.inputs[0].dtype == np.uint8 and bundle.inputs[0].zero_point == 128
    assert [s.shape for s in bundle.outputs] == [(1, 1001)]
    assert bundle.outputs[0].scale == pytest.approx(1 / 256)


def test_file_for_each_device_kind(test_data: Path, tmp_path: Path):
    folder = make_bundle(tmp_path, test_data, "mnv1", compiled=True)
    bundle = ModelBundle.load(folder)
    assert bundle.file_for("usb") == folder / "model_edgetpu.tflite"
    assert bundle.file_for("pci:1") == folder / "model_edgetpu.tflite"
    assert bundle.file_for("cpu") == folder / "model.tflite"
    assert bundle.file_for("mock") == folder / "model.tflite"
    with pytest.raises(ModelError, match="unknown device kind"):
        bundle.file_for("gpu")
    (folder / "model_edgetpu.tflite").unlink()
    assert ModelBundle.load(folder).file_for("usb") == folder / "model.tflite"


def test_model_toml_is_applied(test_data: Path, tmp_path: Path):
    toml = """
task = "classify"
description = "tiny mobilenet"
[preprocess]
resize = "letterbox"
mean = [127.5, 127.5, 127.5]
std = 127.5
fill = 10
[classify]
top_k = 5
threshold = 0.1
"""
    bundle = ModelBundle.load(make_bundle(tmp_path, test_data, "mnv1", compiled=True, toml=toml))
    assert not bundle.task_inferred
    assert bundle.description == "tiny mobilenet"
    assert bundle.preprocess == PreprocessOptions("letterbox", (127.5, 127.5, 127.5), 127.5, 10)
    assert bundle.options_for("classify") == {"top_k": 5, "threshold": 0.1}
    assert bundle.options_for("detect") == {}


def test_embedding_and_raw_tasks_are_inferred(test_data: Path):
    assert ModelBundle.load(test_data / f"{EMBED}.tflite").task == "embed"
    assert ModelBundle.load(test_data / "tools" / "split_concat.tflite").task == "raw"
    assert ModelBundle.load(test_data / "keras_lstm_mnist_ptq.tflite").task == "raw"  # [1, 28, 28] is no image input
    assert ModelBundle.load(test_data / "tools" / "mobilenet_quant_v1_224_head_layers.tflite").task == "raw"


def test_single_file_finds_its_twin(test_data: Path):
    bundle = ModelBundle.load(test_data / f"{SMALL}.tflite")
    assert bundle.name == SMALL
    assert bundle.model_path == test_data / f"{SMALL}.tflite"
    assert bundle.edgetpu_path == test_data / f"{SMALL}_edgetpu.tflite"
    compiled = ModelBundle.load(test_data / f"{SMALL}_edgetpu.tflite")
    assert compiled.name == SMALL
    assert compiled.model_path == test_data / f"{SMALL}.tflite"
    assert compiled.file_for("cpu") == test_data / f"{SMALL}.tflite"


def test_compiled_file_alone_runs_only_on_an_edgetpu(test_data: Path, tmp_path: Path):
    lone = tmp_path / "x_edgetpu.tflite"
    shutil.copy(test_data / f"{SMALL}_edgetpu.tflite", lone)
    (tmp_path / "x_labels.txt").write_text("background\ncat\n")
    bundle = ModelBundle.load(lone)
    assert bundle.model_path is None and bundle.task == "classify"
    assert bundle.labels == {0: "background", 1: "cat"}
    assert bundle.file_for("usb:0") == lone
    with pytest.raises(ModelError, match="needs its CPU twin"):
        bundle.file_for("cpu")


def test_a_truncated_cpu_twin_is_named_as_the_twin_of_the_compiled_file(test_data: Path, tmp_path: Path):
    # Loading x_edgetpu.tflite failed naming only x.tflite, a file the user had not given.
    lone = tmp_path / "x_edgetpu.tflite"
    shutil.copy(test_data / f"{SMALL}_edgetpu.tflite", lone)
    (tmp_path / "x.tflite").write_bytes((test_data / f"{SMALL}.tflite").read_bytes()[:4096])
    with pytest.raises(ModelError) as caught:
        ModelBundle.load(lone)
    message = str(caught.value)
    assert message.startswith("x.tflite is the CPU twin of the compiled x_edgetpu.tflite"), message
    assert "is truncated or corrupt" in message and "remove it to serve x_edgetpu.tflite on Edge TPUs only" in message
    folder = tmp_path / "bundle"
    folder.mkdir()
    shutil.copy(lone, folder / "model_edgetpu.tflite")
    shutil.copy(tmp_path / "x.tflite", folder / "model.tflite")
    with pytest.raises(ModelError, match="^model.tflite is the CPU twin of the compiled model_edgetpu.tflite") as caught:
        ModelBundle.load(folder)
    assert "remove it" not in str(caught.value)  # a folder bundle needs its twin


def test_model_bytes_are_named_in_a_sentence_that_reads(test_data: Path):
    with pytest.raises(ModelError, match="^the model data is truncated or corrupt: it is 4096 bytes long"):
        TfliteModel.read((test_data / f"{SMALL}.tflite").read_bytes()[:4096])
    with pytest.raises(ModelError, match="^the model data is empty"):
        TfliteModel.read(b"")


def test_overrides(test_data: Path, tmp_path: Path):
    labels = tmp_path / "l.txt"
    labels.write_text("0 a\n1 b\n")
    bundle = ModelBundle.load(test_data / f"{SMALL}.tflite", labels=labels, task="raw")
    assert bundle.task == "raw" and bundle.labels == {0: "a", 1: "b"}


# ----------------------------------------------------------------------------- errors


def test_missing_path_and_missing_cpu_twin(test_data: Path, tmp_path: Path):
    with pytest.raises(ModelError, match="does not exist"):
        ModelBundle.load(tmp_path / "nope")
    folder = make_bundle(tmp_path, test_data, "mnv1", compiled=True)
    (folder / "model.tflite").unlink()
    with pytest.raises(ModelError, match="has no model.tflite .*CPU twin is required"):
        ModelBundle.load(folder)
    with pytest.raises(ModelError, match="has no model.tflite"):
        ModelBundle.load(tmp_path)


def test_not_a_tflite_file(tmp_path: Path):
    other = tmp_path / "model.onnx"
    other.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a .tflite"):
        ModelBundle.load(other)


@pytest.mark.parametrize("kind", ["truncated", "random", "empty"])
def test_corrupt_tflite(test_data: Path, tmp_path: Path, kind: str):
    data = (test_data / f"{SMALL}.tflite").read_bytes()
    content = {
        "truncated": data[: len(data) // 3],
        "random": bytes(np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8)),
        "empty": b"",
    }[kind]
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    with pytest.raises(ModelError):
        ModelBundle.load(path)


def test_twins_that_do_not_match(test_data: Path, tmp_path: Path):
    folder = make_bundle(tmp_path, test_data, "mnv1", compiled=True)
    shutil.copy(test_data / "mobilenet_v1_0.5_160_quant_edgetpu.tflite", folder / "model_edgetpu.tflite")
    with pytest.raises(ModelError, match="does not match its CPU twin"):
        ModelBundle.load(folder)


@pytest.mark.parametrize(
    "toml, message",
    [
        ('task = "segment"\n', "unknown task 'segment'"),
        ("task = [\n", "not valid TOML"),
        ('[preprocess]\nresize = "bicubic"\n', "unknown resize"),
        ("[preprocess]\nmeen = 1\n", "unknown key\\(s\\) \\['meen'\\]"),
        ("[preprocess]\nstd = 0\n", "std must not be zero"),
        ('[preprocess]\nmean = "x"\n', "mean must be a number"),
        ("[preprocess]\nfill = 300\n", "fill"),
        ("preprocess = 1\n", "must be a table"),
        ("[classify]\ntop_k = 0\n", "top_k"),
        ('[detect]\nthreshold = "high"\n', "threshold"),
        ("[embed]\nnormalize = 1\n", "normalize"),
        ("task = 1\n", "task must be a string"),
        ('task = "detect"\n', "4 outputs"),
    ],
)
def test_bad_model_toml(test_data: Path, tmp_path: Path, toml: str, message: str):
    with pytest.raises(ModelError, match=message):
        ModelBundle.load(make_bundle(tmp_path, test_data, "mnv1", compiled=True, toml=toml))


def test_image_task_on_a_non_image_model(test_data: Path):
    with pytest.raises(ModelError, match="needs one image input"):
        ModelBundle.load(test_data / "tools" / "split_concat.tflite", task="classify")


def test_unreadable_labels(test_data: Path, tmp_path: Path):
    folder = make_bundle(tmp_path, test_data, "mnv1", compiled=True, labels=None)
    (folder / "labels.txt").mkdir()
    with pytest.raises(ModelError, match="cannot read labels"):
        ModelBundle.load(folder)
    (folder / "labels.txt").rmdir()
    (folder / "labels.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ModelError, match="not UTF-8"):
        ModelBundle.load(folder)


def test_toml_names_the_labels_file_and_the_bundle(test_data: Path, tmp_path: Path):
    folder = make_bundle(tmp_path, test_data, "mnv1", compiled=True, labels=None,
                         toml='name = "tiny"\nlabels = "classes.txt"\n')
    (folder / "classes.txt").write_text("0: zero\n1: one\n")
    bundle = ModelBundle.load(folder)
    assert bundle.name == "tiny" and bundle.labels == {0: "zero", 1: "one"}
    assert bundle.labels_path == folder / "classes.txt"


def test_unknown_top_level_key_only_warns(test_data: Path, tmp_path: Path, caplog):
    bundle = ModelBundle.load(make_bundle(tmp_path, test_data, "mnv1", compiled=True,
                                          toml='task = "classify"\n[learn]\nx = 1\n'))
    assert bundle.task == "classify"
    assert "ignoring unknown key 'learn'" in caplog.text

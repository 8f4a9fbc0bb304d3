"""scripts/fetch_models: bundles laid out from a local folder (as CI does) and from a URL."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgetpud.daemon.model import ModelBundle, load_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fetch_models"
REQUIRED = [
    "mobilenet_v1_0.25_128_quant",
    "mobilenet_v1_0.5_160_quant",
    "mobilenet_v1_1.0_224_quant_embedding_extractor",
]


@pytest.fixture(scope="module")
def fetch_models():
    loader = importlib.machinery.SourceFileLoader("fetch_models_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up while the class is built
    try:
        loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(loader.name, None)


@pytest.fixture(scope="module")
def laid_out(fetch_models, test_data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fetch") / "models"
    assert fetch_models.main(["--from", str(test_data), "--out", str(out), "-q"]) == 0
    return out


def test_bundles_from_a_local_folder(laid_out: Path, test_data: Path):
    names = sorted(p.name for p in laid_out.iterdir() if p.is_dir() and p.name != "images")
    # the SSD detector is optional and absent from the test data; the traffic model comes from ../traffic
    traffic = ["traffic_model"] if (test_data.parent / "traffic").is_dir() else []
    assert names == REQUIRED + traffic
    for name in REQUIRED:
        folder = laid_out / name
        assert (folder / "model.tflite").is_file() and (folder / "model_edgetpu.tflite").is_file()
        assert (folder / "model.toml").is_file()
    assert not list(laid_out.glob(".*.partial"))
    assert (laid_out / "images" / "cat.bmp").is_file()
    assert (laid_out / ".gitignore").read_text().splitlines()[-1] == "*"


def test_bundles_load_with_their_tasks(laid_out: Path):
    tasks = {name: ModelBundle.load(laid_out / name).task for name in REQUIRED}
    assert tasks == {REQUIRED[0]: "classify", REQUIRED[1]: "classify", REQUIRED[2]: "embed"}
    bundle = ModelBundle.load(laid_out / REQUIRED[0])
    assert not bundle.task_inferred and bundle.labels[286] == "Egyptian cat"
    assert bundle.file_for("usb") == laid_out / REQUIRED[0] / "model_edgetpu.tflite"


def test_a_fetched_bundle_classifies_the_fetched_cat(laid_out: Path):
    with load_model(laid_out / REQUIRED[1]) as session:
        top = session.classify(laid_out / "images" / "cat.bmp")[0]
    assert (top.id, top.label) == (286, "Egyptian cat")
    assert top.score == pytest.approx(0.605, abs=0.002)


def test_rerun_keeps_files_and_force_replaces_them(fetch_models, test_data: Path, tmp_path: Path):
    out = tmp_path / "models"
    args = ["--from", str(test_data), "--out", str(out), "--bundle", REQUIRED[0], "--no-images", "-q"]
    assert fetch_models.main(args) == 0
    toml = out / REQUIRED[0] / "model.toml"
    toml.write_text('task = "classify"\n# edited by hand\n')
    assert fetch_models.main(args) == 0
    assert "edited by hand" in toml.read_text()
    assert fetch_models.main(args + ["--force"]) == 0
    assert "edited by hand" not in toml.read_text()
    assert not (out / "images").exists()


def test_missing_required_file_fails_cleanly(fetch_models, test_data: Path, tmp_path: Path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("mobilenet_v1_0.25_128_quant.tflite", "imagenet_labels.txt"):  # no _edgetpu twin
        (source / name).write_bytes((test_data / name).read_bytes())
    out = tmp_path / "models"
    assert fetch_models.main(["--from", str(source), "--out", str(out), "--bundle", REQUIRED[0], "-q"]) == 1
    assert not (out / REQUIRED[0]).exists()
    assert not list(out.glob(".*.partial"))


def test_not_a_model_is_refused(fetch_models, test_data: Path, tmp_path: Path, caplog):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("mobilenet_v1_0.25_128_quant_edgetpu.tflite", "imagenet_labels.txt"):  # all else is fine
        (source / name).write_bytes((test_data / name).read_bytes())
    (source / "mobilenet_v1_0.25_128_quant.tflite").write_text("<html>404</html>")
    out = tmp_path / "models"
    with caplog.at_level("ERROR", logger="fetch_models"):
        assert fetch_models.main(["--from", str(source), "--out", str(out), "--bundle", REQUIRED[0], "-q"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"bundle {REQUIRED[0]}: mobilenet_v1_0.25_128_quant.tflite is not a TFLite model (identifier b'l>40')"
    ]
    assert not (out / REQUIRED[0]).exists()
    assert not list(out.glob(".*.partial"))


def test_usage_errors(fetch_models, tmp_path: Path):
    assert fetch_models.main(["--from", str(tmp_path / "nope"), "--out", str(tmp_path / "m"), "-q"]) == 2
    assert fetch_models.main(["--from", str(tmp_path), "--out", str(tmp_path / "m"), "--bundle", "resnet", "-q"]) == 1


def test_download_path_with_a_file_url(fetch_models, test_data: Path, tmp_path: Path):
    out = tmp_path / "models"
    args = ["--base-url", test_data.as_uri(), "--out", str(out), "--bundle", REQUIRED[2], "--no-images", "-q"]
    assert fetch_models.main(args) == 0
    assert (out / REQUIRED[2] / "model_edgetpu.tflite").read_bytes() == (
        test_data / "mobilenet_v1_1.0_224_quant_embedding_extractor_edgetpu.tflite"
    ).read_bytes()


def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK)
    result = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "ssd_mobilenet_v2_coco_quant_postprocess  (optional)" in result.stdout.splitlines()


def test_the_traffic_detector_is_laid_out_beside_the_coral_models(laid_out: Path, traffic_data: Path):
    bundle = ModelBundle.load(laid_out / "traffic_model")
    assert bundle.task == "detect" and not bundle.task_inferred
    assert bundle.labels == {0: "sedan", 1: "pickup_suv_van", 2: "large_veh_bus"}
    assert [(p.input, p.output) for p in bundle.state] == [
        ("raw_inputs/init_lstm_c", "raw_outputs/lstm_c"), ("raw_inputs/init_lstm_h", "raw_outputs/lstm_h")]
    assert [tuple(s.shape) for s in bundle.task_outputs] == [(1, 40, 4), (1, 40), (1, 40), (1,)]
    objects = load_model(laid_out / "traffic_model").detect(str(traffic_data / "frames" / "0001.bmp"))
    assert [o.label for o in objects] == ["pickup_suv_van"] and 0.41 <= objects[0].score <= 0.5


def test_a_traffic_folder_that_is_not_one_is_a_usage_error(fetch_models, test_data: Path, tmp_path: Path):
    assert fetch_models.main(["--from", str(test_data), "--traffic-from", str(tmp_path / "none"),
                              "--out", str(tmp_path / "m"), "-q"]) == 2

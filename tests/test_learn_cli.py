"""edgetpuctl's retraining commands through the real daemon: the mock device, the real embedding extractor, real photos.

Each test teaches its own copy of the extractor (``emb_<name>``), so the tests share one
daemon without sharing a head. Samples are crops of the Coral test photos, made with PIL.
The helpers at the top (sample folders, bundle files, progress bars) are tested without a daemon.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from PIL import Image

from daemon_fixture import RealDaemon, ctl
from edgetpud.daemon.cli import export_files, progress
from edgetpud.daemon.cli.main import main
from edgetpud.daemon.cli.samples import InputError, labeled_folder
from edgetpud.daemon.client import ExportResult

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

BASE = "embedding_extractor"
COPIES = ("add", "from", "train", "export", "heads", "bad", "calls")
PHOTOS = {"cat": "cat.bmp", "sunflower": "sunflower.bmp", "bird": "bird.bmp"}
#: Crop boxes as fractions of the photo (left, top, right, bottom): several views of one subject.
CROPS = [(0.0, 0.0, 1.0, 1.0), (0.05, 0.05, 0.95, 0.95), (0.1, 0.0, 1.0, 0.9), (0.0, 0.1, 0.9, 1.0)]


@pytest.fixture(scope="module", name="daemon")
def daemon_fixture(tmp_path_factory, test_data) -> Iterator[RealDaemon]:
    d = RealDaemon(tmp_path_factory.mktemp("learn_cli"), test_data, bundles=[BASE])
    for name in COPIES:
        shutil.copytree(d.models_dir / BASE, d.models_dir / f"emb_{name}")
    d.start()
    yield d
    d.stop()


def run(daemon: RealDaemon, *args: str):
    out, err = io.StringIO(), io.StringIO()
    code = main(["--address", daemon.address, *args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def run_json(daemon: RealDaemon, *args: str) -> dict:
    code, out, err = run(daemon, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def crops(test_data: Path, folder: Path, photo: str, count: int = len(CROPS)) -> List[Path]:
    """``count`` PNG crops of one test photo in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.open(test_data / photo).convert("RGB")
    width, height = image.size
    paths = []
    for index, (left, top, right, bottom) in enumerate(CROPS[:count]):
        path = folder / f"{Path(photo).stem}_{index}.png"
        image.crop((int(left * width), int(top * height), int(right * width), int(bottom * height))).save(path)
        paths.append(path)
    return paths


def labeled_dir(test_data: Path, root: Path, labels=("cat", "sunflower")) -> Path:
    for label in labels:
        crops(test_data, root / label, PHOTOS[label])
    return root


def top1(daemon: RealDaemon, model: str, image: Path) -> Dict:
    [result] = run_json(daemon, "classify", "-m", model, "-k", "1", str(image))["results"]
    return result["classes"][0]


# ------------------------------------------------------------------ without a daemon

def test_labeled_folder_takes_labels_from_folder_names(tmp_path):
    for label, names in {"b": ["2.JPG", "1.png", ".hidden.png", "notes.txt"], "a": ["x.bmp"], "empty": []}.items():
        (tmp_path / label).mkdir()
        for name in names:
            (tmp_path / label / name).write_bytes(b"x")
    (tmp_path / "stray.jpg").write_bytes(b"x")
    pairs, skipped = labeled_folder(str(tmp_path))
    assert [(label, path.name) for label, path in pairs] == [("a", "x.bmp"), ("b", "1.png"), ("b", "2.JPG")]
    assert skipped == ["empty"]


def test_labeled_folder_refuses_missing_and_imageless_folders(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        labeled_folder(str(tmp_path / "none"))
    with pytest.raises(InputError, match=r"no image folders in it \(no folders\)"):
        labeled_folder(str(tmp_path))
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match="folders without images: cat"):
        labeled_folder(str(tmp_path))


def test_bundle_files_and_a_stale_compiled_twin(tmp_path):
    cpu = ExportResult("m", 3, "cpu", 4, ["cat", "", "7 dwarfs"], b"TFL3")
    (tmp_path / export_files.EDGETPU_FILE).write_bytes(b"old head")
    written = export_files.write_bundle(tmp_path, cpu, None)
    assert {p.name for p in written} == {"model.tflite", "labels.txt", "model.toml"}
    assert not (tmp_path / export_files.EDGETPU_FILE).exists()  # it carried the old head
    assert (tmp_path / "labels.txt").read_text() == "0 cat\n2 7 dwarfs\n"
    assert (tmp_path / "model.toml").read_text() == 'task = "classify"\n'
    assert (tmp_path / "model.tflite").read_bytes() == b"TFL3"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_progress_bars_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress.bar(io.StringIO(), 10, "x").disable is True
    shown = progress.bar(Terminal(), 10, "x")
    assert shown.disable is False and shown.delay == 1
    shown.close()


# ------------------------------------------------------------------ through the daemon

def test_classes_add_then_classify_answers_with_the_learned_label(daemon, test_data, tmp_path):
    model = "emb_add"
    for label in ("cat", "sunflower"):
        document = run_json(daemon, "classes", "add", "--model", model, "--label", label,
                            *map(str, crops(test_data, tmp_path / label, PHOTOS[label])))
        assert document["model"] == model and document["added"] == len(CROPS)
        assert label in [c["label"] for c in document["classes"]]
    assert top1(daemon, model, test_data / "cat.bmp")["label"] == "cat"
    assert top1(daemon, model, test_data / "sunflower.bmp")["label"] == "sunflower"

    listed = run_json(daemon, "classes", "list", "--model", model)
    assert listed["model"] == model
    assert {(c["label"], c["samples"], c["source"]) for c in listed["classes"]} == \
        {("cat", 4, "imprinted"), ("sunflower", 4, "imprinted")}
    assert all({"label", "samples", "source", "id"} <= set(c) for c in listed["classes"])
    assert {"version", "head_version", "method"} <= set(listed)
    code, out, _ = run(daemon, "classes", "list", "-m", model)
    assert code == 0 and "SAMPLES" in out and "sunflower" in out


def test_from_dir_then_remove(daemon, test_data, tmp_path):
    model = "emb_from"
    root = labeled_dir(test_data, tmp_path / "data")
    (root / "empty").mkdir()
    code, out, err = run(daemon, "--json", "classes", "add", "-m", model, "--from", str(root))
    assert code == 0, err
    document = json.loads(out)
    assert document["added"] == 2 * len(CROPS)
    assert sorted(c["label"] for c in document["classes"]) == ["cat", "sunflower"]
    assert "empty holds no images; skipped" in err
    assert top1(daemon, model, test_data / "sunflower.bmp")["label"] == "sunflower"

    removed = run_json(daemon, "classes", "remove", "-m", model, "--label", "sunflower")
    assert [c["label"] for c in removed["classes"]] == ["cat"]
    assert [c["label"] for c in run_json(daemon, "classes", "list", "-m", model)["classes"]] == ["cat"]
    code, out, err = run(daemon, "--json", "classes", "remove", "-m", model, "--label", "sunflower")
    assert code == 1 and out == "" and "NOT_FOUND" in err and "classes remove" in err
    assert top1(daemon, model, test_data / "cat.bmp")["label"] == "cat"  # still serving


def test_train_with_data_prints_one_json_document(daemon, test_data, tmp_path):
    model = "emb_train"
    root = labeled_dir(test_data, tmp_path / "data", labels=("cat", "sunflower", "bird"))
    result = ctl("--json", "train", "-m", model, "--data", str(root), "--epochs", "5", "--seed", "3",
                 "--lr", "0.1", address=daemon.address, timeout=120)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # one document, nothing else on stdout
    assert document["model"] == model and document["added"] == 3 * len(CROPS)
    assert document["method"] == "backprop" and document["epochs"] == 5
    assert [h["epoch"] for h in document["history"]] == [1, 2, 3, 4, 5]
    assert document["loss"] == document["history"][-1]["loss"]
    assert 0.0 <= document["train_accuracy"] <= 1.0
    assert sorted(c["label"] for c in document["classes"]) == ["bird", "cat", "sunflower"]
    assert {c["source"] for c in document["classes"]} == {"trained"}
    assert top1(daemon, model, test_data / "bird.bmp")["label"] in {"bird", "cat", "sunflower"}

    code, out, err = run(daemon, "train", "-m", model, "--epochs", "2", "--warm-start", "--seed", "3")
    assert code == 0, err
    assert out.startswith("trained 2 epochs: loss ") and "bird" in out


def test_export_bundle_loads_and_classifies_like_the_daemon(daemon, test_data, tmp_path):
    from edgetpud.daemon.model import load_model

    model = "emb_export"
    run_json(daemon, "classes", "add", "-m", model, "--from", str(labeled_dir(test_data, tmp_path / "data")))
    out = tmp_path / "bundle"
    document = run_json(daemon, "export", "-m", model, "-o", str(out))
    names = {Path(f["path"]).name for f in document["files"]}
    assert names == {"model.tflite", "model_edgetpu.tflite", "labels.txt", "model.toml"}  # the base has a compiled twin
    assert document["bundle"] is True and sorted(document["labels"]) == ["cat", "sunflower"]
    assert (out / "model.toml").read_text() == 'task = "classify"\n'
    session = load_model(out)
    try:
        for photo in ("cat.bmp", "sunflower.bmp", "bird.bmp"):
            local = session.classify(str(test_data / photo), top_k=1)[0]
            remote = top1(daemon, model, test_data / photo)
            assert (local.id, local.label) == (remote["id"], remote["label"]), photo
    finally:
        session.close()

    document = run_json(daemon, "export", "-m", model, "-o", str(out), "--target", "cpu")
    assert [f["target"] for f in document["files"] if f["target"]] == ["cpu"]
    assert not (out / "model_edgetpu.tflite").exists()  # the compiled file of the earlier export is gone

    single = tmp_path / "one.tflite"
    document = run_json(daemon, "export", "-m", model, "-o", str(single))
    assert document["bundle"] is False and single.read_bytes()[4:8] == b"TFL3"
    assert single.read_bytes() == (out / "model.tflite").read_bytes()


def test_heads_list_and_restore(daemon, test_data, tmp_path):
    model = "emb_heads"
    run_json(daemon, "classes", "add", "-m", model, "-l", "cat", *map(str, crops(test_data, tmp_path / "c", "cat.bmp")))
    run_json(daemon, "classes", "add", "-m", model, "-l", "sunflower",
             *map(str, crops(test_data, tmp_path / "s", "sunflower.bmp")))
    heads = run_json(daemon, "heads", "list", "-m", model)
    assert heads["model"] == model and len(heads["heads"]) >= 2
    assert all({"head_version", "method", "created", "labels", "current"} <= set(h) for h in heads["heads"])
    [current] = [h for h in heads["heads"] if h["current"]]
    assert sorted(current["labels"]) == ["cat", "sunflower"]
    [first] = [h for h in heads["heads"] if h["labels"] == ["cat"]]

    restored = run_json(daemon, "heads", "restore", "-m", model, "--version", str(first["head_version"]))
    assert [c["label"] for c in restored["classes"]] == ["cat"]
    assert top1(daemon, model, test_data / "sunflower.bmp")["label"] == "cat"  # the only class left
    code, out, _ = run(daemon, "heads", "list", "-m", model)
    assert code == 0 and "VERSION" in out and "*" in out
    code, out, err = run(daemon, "heads", "restore", "-m", model, "--version", "999")
    assert code == 1 and out == "" and "heads restore" in err


def test_a_missing_image_is_named_and_nothing_is_added(daemon, test_data, tmp_path):
    model = "emb_bad"
    good = crops(test_data, tmp_path / "c", "cat.bmp", count=2)
    missing = tmp_path / "missing.jpg"
    code, out, err = run(daemon, "--json", "classes", "add", "-m", model, "-l", "cat", str(good[0]), str(missing))
    assert code == 1 and out == "" and f"no such image file: {missing}" in err
    code, out, err = run(daemon, "--json", "classes", "list", "-m", model)
    assert code == 1 or "cat" not in [c["label"] for c in json.loads(out)["classes"]], err


def test_unusable_folders_fail_with_a_clear_message(daemon, tmp_path):
    code, out, err = run(daemon, "classes", "add", "-m", "emb_bad", "--from", str(tmp_path))
    assert code == 1 and out == "" and "no image folders" in err
    (tmp_path / "cat").mkdir()
    code, out, err = run(daemon, "train", "-m", "emb_bad", "--data", str(tmp_path))
    assert code == 1 and "folders without images: cat" in err
    code, _, err = run(daemon, "classes", "add", "-m", "emb_bad", "--from", str(tmp_path / "nope"))
    assert code == 1 and "no such folder" in err


@pytest.mark.parametrize("args, message", [
    (["train", "-m", "emb_bad", "--lr", "nan"], "argument --lr"),
    (["train", "-m", "emb_bad", "--lr", "inf"], "argument --lr"),
    (["train", "-m", "emb_bad", "--epochs", "0"], "argument --epochs"),
    (["train", "-m", "emb_bad", "--epochs", "-3"], "argument --epochs"),
    (["train", "-m", "emb_bad", "--validation", "1"], "argument --validation"),
    (["train", "-m", "emb_bad", "--l2", "nan"], "argument --l2"),
    (["heads", "restore", "-m", "emb_bad", "--version", "0"], "argument --version"),
    (["export", "-m", "emb_bad", "-o", "x", "--target", "gpu"], "argument --target"),
    (["classes", "add", "-m", "emb_bad", "-l", "cat"], "give --label L and one or more IMAGE"),
    (["classes", "add", "-m", "emb_bad", "-l", "cat", "--from", "."], "--from DIR takes the labels"),
])
def test_bad_options_are_usage_errors(daemon, args, message):
    result = ctl(*args, address=daemon.address)
    assert result.returncode == 2 and result.stdout == "" and message in result.stderr, result.stderr
    assert "usage: edgetpuctl" in result.stderr


def test_a_large_folder_goes_in_calls_the_daemon_accepts(monkeypatch, daemon, test_data, tmp_path):
    from edgetpud.daemon.cli import learn

    monkeypatch.setattr(learn, "MAX_SAMPLES_PER_CALL", 3)
    root = labeled_dir(test_data, tmp_path / "data")  # 8 images: calls of 3, 3 and 2
    document = run_json(daemon, "classes", "add", "-m", "emb_calls", "--from", str(root))
    assert document["added"] == 8
    assert {(c["label"], c["samples"]) for c in document["classes"]} == {("cat", 4), ("sunflower", 4)}
    assert len(run_json(daemon, "heads", "list", "-m", "emb_calls")["heads"]) == 3  # one head per call

"""Malformed model files and bundles reaching a running daemon: each is refused with a status that
says what is wrong, and the daemon and its device worker keep serving the good model.

Bad files are made at test time from the real Coral model, in the test's temporary folder.
"""
from __future__ import annotations

import io
import shutil
import signal
from pathlib import Path
from typing import Any, Callable, Iterator

import flatbuffers
import grpc
import numpy as np
import pytest

from edgetpud.daemon.cli.main import main
from edgetpud.daemon.client import Client, ClientError
from edgetpud.daemon.model._schema import schema
from edgetpud.daemon.model.tflite import FILE_IDENTIFIER, TfliteModel

from daemon_fixture import real_daemon_fixture, wait_for

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

GOOD = "mobilenet_v1_0.25_128_quant"
Code = grpc.StatusCode

daemon = real_daemon_fixture("bad_models", [GOOD])


def pack_unchecked(model: TfliteModel) -> bytes:
    """Serialize a model as is, without the reader's checks, the way a broken tool would."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.raw.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def good_model(test_data: Path) -> TfliteModel:
    return TfliteModel.read(test_data / f"{GOOD}.tflite")


def constant_tensor(model: TfliteModel) -> int:
    """The first tensor of subgraph 0 that holds weights."""
    return next(t.index for t in model.tensors() if t.is_constant)


def assert_refused(call: Callable[[], Any], code: grpc.StatusCode, *fragments: str) -> ClientError:
    """The call fails with ``code``, a message naming every fragment, and no Python traceback."""
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value
    assert error.code == code, f"{error.code_name}: {error.message}"
    for fragment in fragments:
        assert fragment in error.message, error.message
    assert "Traceback" not in error.message
    return error


def assert_still_serving(client: Client, test_data: Path) -> None:
    """The good model answers a classify, with Coral's expected top class for the cat."""
    result = client.classify(GOOD, test_data / "cat.bmp", top_k=3)
    assert 283 in [c.id for c in result.classes]


@pytest.fixture
def restarts(client: Client) -> Iterator[None]:
    """The test must not have killed a device worker."""
    before = {d.id: d.restarts for d in client.devices()}
    yield
    assert {d.id: d.restarts for d in client.devices()} == before


def test_constant_input_tensor_is_refused_before_the_worker_runs_it(
        client: Client, test_data: Path, tmp_path: Path, restarts: None) -> None:
    # The runtime maps weights read-only; filling such an "input" killed the worker with SIGSEGV
    # and the caller got UNAVAILABLE, as if retrying could help.
    model = good_model(test_data)
    model.raw.subgraphs[0].inputs = [constant_tensor(model)]
    data = pack_unchecked(model)
    path = tmp_path / "constant_input.tflite"
    path.write_bytes(data)
    assert_refused(lambda: client.load_model("constant_input", path=str(path)),
                   Code.FAILED_PRECONDITION, "input tensor", "constant data")
    assert_still_serving(client, test_data)
    assert_refused(lambda: client.load_model("constant_input", data=data),
                   Code.FAILED_PRECONDITION, "input tensor", "constant data")
    assert_still_serving(client, test_data)


def _absent_shape(model: TfliteModel) -> None:
    reshape = model.raw.subgraphs[0].operators[29]  # RESHAPE (data, shape) before the softmax
    reshape.inputs = [reshape.inputs[0], -1]


def _depthwise_without_bias(model: TfliteModel) -> None:
    depthwise = model.raw.subgraphs[0].operators[1]  # DEPTHWISE_CONV_2D on uint8 data
    depthwise.inputs = list(depthwise.inputs)[:2]


def _weights_of_another_size(model: TfliteModel) -> None:
    tensors = model.tensors()
    filters = model.operators()[0].inputs[1]
    other = next(t for t in tensors if t.is_constant and t.buffer != tensors[filters].buffer
                 and len(model.buffer_data(t.buffer)) < len(model.buffer_data(tensors[filters].buffer)))
    model.raw.subgraphs[0].tensors[filters].buffer = other.buffer


@pytest.mark.parametrize("break_it, fragments", [
    (_absent_shape, ("operator 29 (RESHAPE)", "required input 1 absent")),
    (_depthwise_without_bias, ("operator 1 (DEPTHWISE_CONV_2D)", "no bias")),
    (_weights_of_another_size, ("constant data is", "bytes")),
], ids=["absent-input", "depthwise-without-bias", "weights-size"])
def test_graph_the_runtime_would_crash_on_is_refused(
        client: Client, test_data: Path, tmp_path: Path, restarts: None,
        break_it: Callable[[TfliteModel], None], fragments: tuple) -> None:
    # Each of these passed the reader and killed the device worker (SIGSEGV in the runtime's kernels):
    # the caller got UNAVAILABLE 'worker died', and every device's worker died when there were several.
    model = good_model(test_data)
    break_it(model)
    path = tmp_path / "broken.tflite"
    path.write_bytes(pack_unchecked(model))
    assert_refused(lambda: client.load_model("broken", path=str(path)), Code.FAILED_PRECONDITION,
                   "is corrupt", *fragments)
    assert_still_serving(client, test_data)


def test_truncated_copies_are_refused_with_a_message_about_the_file(
        client: Client, test_data: Path, tmp_path: Path, restarts: None) -> None:
    # A partly copied model used to be explained with Python's struct error
    # ("unpack_from requires a buffer of at least 503684 bytes ...").
    data = (test_data / f"{GOOD}.tflite").read_bytes()
    for cut in (1000, 4096, 100_000, 250_001, 503_000):
        path = tmp_path / f"cut{cut}.tflite"
        path.write_bytes(data[:cut])
        error = assert_refused(lambda: client.load_model("truncated", path=str(path)), Code.FAILED_PRECONDITION,
                               f"is truncated or corrupt: it is {cut} bytes long", "copy it again")
        assert "unpack_from" not in error.message
    assert_refused(lambda: client.load_model("truncated", data=data[:4096]), Code.FAILED_PRECONDITION,
                   "it is 4096 bytes long")
    assert_still_serving(client, test_data)


@pytest.mark.parametrize("content, fragment", [
    (b"", "is empty"),
    (b"TFL3", "too short"),
    (b"<html><body>404 Not Found</body></html>\n" * 20, "not a TFLite model"),
], ids=["empty", "four-bytes", "html-page"])
def test_files_that_are_no_model_are_refused(
        client: Client, test_data: Path, tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    assert_refused(lambda: client.load_model("not_a_model", path=str(path)), Code.FAILED_PRECONDITION, fragment)
    if content:
        assert_refused(lambda: client.load_model("not_a_model", data=content), Code.FAILED_PRECONDITION, fragment)
    assert_still_serving(client, test_data)


def _reload(daemon: Any, client: Client, done: Callable[[dict], bool], what: str) -> dict:
    """SIGHUP the daemon and wait (a hang guard, not a timing check) until its model list satisfies ``done``."""
    daemon.process.send_signal(signal.SIGHUP)
    models: dict = {}

    def settled() -> bool:
        models.clear()
        models.update({m.name: m for m in client.models()})
        return done(models)
    wait_for(settled, timeout=30, what=what)
    return models


def test_rescan_reports_bad_bundles_and_keeps_serving(daemon: Any, client: Client, test_data: Path) -> None:
    data = (test_data / f"{GOOD}.tflite").read_bytes()
    bundles = {
        "rescan_truncated": {"model.tflite": data[:3000]},
        "rescan_binary_labels": {"model.tflite": data, "labels.txt": b"\xff\xfe\x00garbage\x80"},
        "rescan_toml_types": {"model.tflite": data, "model.toml": b'task = 3\n'},
        "rescan_labels_missing": {"model.tflite": data, "model.toml": b'labels = "gone.txt"\n'},
    }
    for name, files in bundles.items():
        folder = daemon.models_dir / name
        folder.mkdir()
        for file, content in files.items():
            (folder / file).write_bytes(content)
    try:
        models = _reload(daemon, client, lambda m: all(n in m for n in bundles), "the bad bundles to be listed")
        expected = {"rescan_truncated": "is truncated or corrupt", "rescan_binary_labels": "not UTF-8",
                    "rescan_toml_types": "task must be a string", "rescan_labels_missing": "gone.txt"}
        for name, fragment in expected.items():
            assert models[name].state == "failed"
            assert fragment in models[name].error, models[name].error
        assert models[GOOD].state == "ready"
        assert_still_serving(client, test_data)
    finally:
        for name in bundles:
            shutil.rmtree(daemon.models_dir / name)
        _reload(daemon, client, lambda m: not any(n in m for n in bundles), "the bad bundles to be forgotten")


def test_rescan_that_cannot_replace_a_served_model_says_so(daemon: Any, client: Client, test_data: Path) -> None:
    # The served version keeps serving, as it should; before, only the daemon's log said the new
    # files had been refused, and 'models info' showed the model as if all were well.
    folder = daemon.models_dir / "rescan_replaced"
    folder.mkdir()
    data = (test_data / f"{GOOD}.tflite").read_bytes()
    (folder / "model.tflite").write_bytes(data)
    try:
        _reload(daemon, client, lambda m: getattr(m.get("rescan_replaced"), "state", "") == "ready",
                "the new bundle to serve")
        (folder / "model.tflite").write_bytes(data[:2000])
        models = _reload(daemon, client, lambda m: bool(m["rescan_replaced"].problems), "the refused change to show")
        info = client.model_info("rescan_replaced")
        assert info.state == "ready" and info.version == models["rescan_replaced"].version
        assert any("could not replace version" in p and "is truncated or corrupt" in p for p in info.problems), \
            info.problems
        text = io.StringIO()
        assert main(["--address", daemon.address, "models", "info", "rescan_replaced"], stdout=text) == 0
        assert "Problem: the changed bundle at" in text.getvalue()  # the operator's view says it too
        assert client.classify("rescan_replaced", test_data / "cat.bmp", top_k=1).classes[0].id == 283
        (folder / "model.tflite").write_bytes(data)
        _reload(daemon, client, lambda m: not m["rescan_replaced"].problems, "the fixed bundle to serve cleanly")
    finally:
        shutil.rmtree(folder)
        _reload(daemon, client, lambda m: "rescan_replaced" not in m, "the bundle to be unloaded")
    assert_still_serving(client, test_data)

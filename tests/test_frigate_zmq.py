"""Frigate's zmq detector against a real daemon: a client that speaks exactly Frigate's protocol.

``FrigateClient`` behaves as ``frigate/detectors/plugins/zmq_ipc.py`` does: a REQ
socket with a receive/send timeout (200 ms by default) and linger 0; at start the
model handshake (30 s allowed), uploading the model file when it is not available;
on a timeout it closes the socket, connects a new one and does the handshake again.
The model is the real traffic detector (3 inputs: the image and a recurrent state).
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import pytest
from PIL import Image

zmq = pytest.importorskip("zmq", reason="pyzmq is the frigate extra (pip install -e '.[dev]' installs it)")

from edgetpud.daemon.config import ConfigError, build_config  # noqa: E402
from edgetpud.daemon.frigate import protocol  # noqa: E402
from edgetpud.daemon.model.preprocess import resize  # noqa: E402
from edgetpud.hal.executor import TfliteExecutor  # noqa: E402

from daemon_fixture import RealDaemon, ctl  # noqa: E402

MODEL_FILE = "traffic_model.tflite"
CLASSIFIER = "mobilenet_v1_0.25_128_quant"


class FrigateClient:
    """Frigate's side of the protocol, step for step."""

    def __init__(self, endpoint: str, model_path: Path, timeout_ms: int = 200) -> None:
        self.context = zmq.Context()
        self.endpoint = endpoint
        self.model_path = model_path
        self.timeout_ms = timeout_ms
        self.socket: Any = None
        self.reconnects = 0
        self.connect()

    def connect(self) -> None:
        if self.socket is not None:
            self.socket.close(linger=0)
            self.reconnects += 1
        self.socket = self.context.socket(zmq.REQ)
        self.socket.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        self.socket.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(self.endpoint)

    def ask(self, frames: Sequence[bytes], timeout_ms: Optional[int] = None) -> List[bytes]:
        """One request and its reply frames (raises zmq.Again on a timeout)."""
        self.socket.send_multipart(list(frames))
        if timeout_ms is not None:
            self.socket.setsockopt(zmq.RCVTIMEO, timeout_ms)
        try:
            return self.socket.recv_multipart()
        finally:
            self.socket.setsockopt(zmq.RCVTIMEO, self.timeout_ms)

    def query(self, name: Optional[str] = None) -> Dict[str, Any]:
        header = {"model_request": True, "model_name": name or self.model_path.name}
        return json.loads(self.ask([json.dumps(header).encode()], timeout_ms=30000)[0])

    def upload(self, data: Optional[bytes] = None, name: Optional[str] = None) -> Dict[str, Any]:
        header = {"model_data": True, "model_name": name or self.model_path.name}
        body = self.model_path.read_bytes() if data is None else data
        return json.loads(self.ask([json.dumps(header).encode(), body], timeout_ms=30000)[0])

    def initialize(self) -> bool:
        """Frigate's _check_and_transfer_model: ready when available and loaded, else upload once."""
        answer = self.query()
        if answer.get("model_available") and answer.get("model_loaded"):
            return True
        if answer.get("model_available"):
            return False
        answer = self.upload()
        return bool(answer.get("model_saved") and answer.get("model_loaded"))

    def raw_request(self, tensor: np.ndarray, header: Optional[Dict[str, Any]] = None) -> List[bytes]:
        head = {"shape": list(tensor.shape), "dtype": tensor.dtype.name, "model_type": "ssd", **(header or {})}
        return self.ask([json.dumps(head).encode(), tensor.tobytes(order="C")])

    def detect_raw(self, tensor: np.ndarray) -> np.ndarray:
        """Frigate's detect_raw: zeros on a timeout, after reconnecting and redoing the handshake."""
        try:
            return decode(self.raw_request(tensor))
        except zmq.Again:
            self.connect()
            self.initialize()
            return np.zeros((20, 6), np.float32)

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


def decode(frames: List[bytes]) -> np.ndarray:
    """Frigate's _decode_response (a multipart answer: header shape and dtype)."""
    assert len(frames) == 2, frames
    header = json.loads(frames[0])
    return np.frombuffer(frames[1], dtype=np.dtype(header["dtype"])).reshape(header["shape"])


def error_of(frames: List[bytes]) -> str:
    """The error a zero answer carries (Frigate ignores it and reads no detections)."""
    rows = decode(frames)
    assert not rows.any(), rows
    return json.loads(frames[0])["error"]


def frame_tensor(traffic: Path, number: int) -> np.ndarray:
    pixels = np.asarray(Image.open(traffic / "frames" / f"{number:04d}.bmp").convert("RGB"))
    resized, _ = resize(pixels, 256, 256, "bilinear")
    return np.ascontiguousarray(resized, dtype=np.uint8)[None]


def reference_rows(traffic: Path, tensor: np.ndarray) -> np.ndarray:
    """In process, as Frigate's own Edge TPU detector builds its answer (edgetpu_tfl.py), state from zeros."""
    interpreter = TfliteExecutor(traffic / MODEL_FILE)  # the bare interpreter, not the daemon's session
    try:
        feeds = [tensor] + [np.zeros(s.shape, s.dtype) for s in interpreter.inputs[1:]]
        boxes, classes, scores, count = interpreter.invoke(feeds)[:4]
    finally:
        interpreter.close()
    rows = np.zeros((20, 6), np.float32)
    for i in range(int(count[0])):
        if scores[0][i] < 0.4 or i == 20:
            break
        rows[i] = [classes[0][i], scores[0][i], *boxes[0][i]]
    return rows


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: Any, test_data: Path, traffic_data: Path) -> Iterator[RealDaemon]:
    workdir = tmp_path_factory.mktemp("frigate")
    d = RealDaemon(workdir, test_data, bundles=[CLASSIFIER])
    d.endpoint = f"ipc://{workdir / 'frigate.ipc'}"  # type: ignore[attr-defined]
    with d.config.open("a") as fh:
        fh.write(f'zmq_listen = ["{d.endpoint}"]\n')  # type: ignore[attr-defined]
        # Frigate's 200 ms would drop frames queued behind others on a loaded CI machine: these tests
        # are about answers, and time out on the client side where they mean to
        fh.write("zmq_timeout_s = 10.0\n")
    d.start()
    yield d
    d.stop()


@pytest.fixture
def frigate(daemon: RealDaemon, traffic_data: Path) -> Iterator[FrigateClient]:
    c = FrigateClient(daemon.endpoint, traffic_data / MODEL_FILE)  # type: ignore[attr-defined]
    yield c
    c.close()


@pytest.fixture(scope="module")
def frames(traffic_data: Path) -> Dict[int, np.ndarray]:
    return {n: frame_tensor(traffic_data, n) for n in (1, 5, 9)}


pytestmark = pytest.mark.slow  # starts the daemon and its device worker


def test_an_unknown_model_is_asked_for_then_uploaded_and_served(daemon: RealDaemon, frames, traffic_data,
                                                                tmp_path: Path) -> None:
    model = tmp_path / "traffic_fresh.tflite"  # a name no other test uploads
    model.write_bytes((traffic_data / MODEL_FILE).read_bytes())
    frigate = FrigateClient(daemon.endpoint, model, timeout_ms=5000)  # type: ignore[attr-defined]
    try:
        assert frigate.query() == {"model_available": False, "model_loaded": False}
        assert frigate.upload() == {"model_saved": True, "model_loaded": True}
        assert frigate.query() == {"model_available": True, "model_loaded": True}
        rows = frigate.detect_raw(frames[5])
    finally:
        frigate.close()
        done = ctl("models", "unload", "traffic_fresh", address=daemon.address)  # one detector of that shape
        assert done.returncode == 0, done.stderr
    expected = reference_rows(traffic_data, frames[5])
    assert rows.dtype == np.float32 and rows.shape == (20, 6)
    assert expected[0, 1] >= 0.4, "the reference finds the vehicle of frame 5"
    np.testing.assert_allclose(rows, expected, atol=1e-6)
    assert rows[0, 0] == 1 and 0.41 <= rows[0, 1] <= 0.50
    assert 0 <= rows[0, 2] < rows[0, 4] <= 1 and 0 <= rows[0, 3] < rows[0, 5] <= 1
    assert not rows[1:].any()  # one vehicle: zero rows after it


@pytest.fixture
def ready(frigate: FrigateClient) -> FrigateClient:
    """A client whose handshake succeeded (uploading the model if this test runs first)."""
    assert frigate.initialize()
    frigate.timeout_ms = 5000
    frigate.connect()
    assert frigate.initialize()
    return frigate


def test_a_second_frigate_finds_the_uploaded_model_loaded(ready: FrigateClient, daemon, traffic_data) -> None:
    other = FrigateClient(daemon.endpoint, traffic_data / MODEL_FILE)
    try:
        assert other.query() == {"model_available": True, "model_loaded": True}
    finally:
        other.close()


def test_a_late_answer_never_reaches_the_next_request(ready: FrigateClient, frames, traffic_data) -> None:
    expected = {n: reference_rows(traffic_data, frames[n]) for n in (1, 9)}
    ready.timeout_ms = 1  # every answer comes too late: Frigate reconnects each time
    ready.connect()
    for _ in range(5):
        assert ready.initialize()  # the handshake after each reconnect (its answer is given 30 s)
        with pytest.raises(zmq.Again):
            ready.raw_request(frames[1])
        ready.connect()
    ready.timeout_ms = 5000
    ready.connect()
    assert ready.initialize()
    np.testing.assert_allclose(decode(ready.raw_request(frames[9])), expected[9], atol=1e-6)
    np.testing.assert_allclose(decode(ready.raw_request(frames[1])), expected[1], atol=1e-6)
    assert ready.reconnects >= 6


def test_frigates_detect_raw_reconnects_after_a_timeout(ready: FrigateClient, frames, traffic_data) -> None:
    ready.timeout_ms = 1
    ready.connect()
    ready.timeout_ms = 5000  # the handshake after the reconnect is Frigate's (30 s), inference 5 s
    assert not ready.detect_raw(frames[5]).any()  # timed out: zeros, then a new socket and the handshake
    np.testing.assert_allclose(ready.detect_raw(frames[5]), reference_rows(traffic_data, frames[5]), atol=1e-6)


def test_many_frigates_at_once_each_get_their_own_answer(ready: FrigateClient, daemon, frames, traffic_data) -> None:
    expected = {n: reference_rows(traffic_data, frames[n]) for n in frames}
    failures: List[str] = []

    def camera(number: int) -> None:
        client = FrigateClient(daemon.endpoint, traffic_data / MODEL_FILE, timeout_ms=10000)
        try:
            assert client.initialize()
            for _ in range(5):
                rows = client.detect_raw(frames[number])
                if not np.allclose(rows, expected[number], atol=1e-6):
                    failures.append(f"frame {number}: {rows[0]} != {expected[number][0]}")
        finally:
            client.close()

    threads = [threading.Thread(target=camera, args=(n,)) for n in (1, 5, 9, 1, 5, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures


def test_a_wrong_dtype_is_refused_and_the_endpoint_serves_on(ready: FrigateClient, frames, traffic_data) -> None:
    error = error_of(ready.raw_request(frames[5].astype(np.float32)))
    assert "takes uint8 [1, 256, 256, 3]" in error and "float32" in error
    np.testing.assert_allclose(decode(ready.raw_request(frames[5])), reference_rows(traffic_data, frames[5]), atol=1e-6)


def test_a_wrong_shape_or_size_is_refused_and_the_endpoint_serves_on(ready: FrigateClient, frames,
                                                                     traffic_data) -> None:
    error = error_of(ready.raw_request(np.zeros((1, 320, 320, 3), np.uint8)))
    assert "takes uint8 [1, 256, 256, 3]" in error and "[1, 320, 320, 3]" in error
    short = ready.ask([json.dumps({"shape": [1, 256, 256, 3], "dtype": "uint8"}).encode(), b"\0" * 100])
    assert "the tensor has 100 bytes" in error_of(short)
    np.testing.assert_allclose(decode(ready.raw_request(frames[1])), reference_rows(traffic_data, frames[1]), atol=1e-6)


@pytest.mark.parametrize("frames_sent, expected", [
    ([b"not json"], "JSON header"),
    ([b"[1, 2]", b""], "must be an object"),
    ([json.dumps({"shape": [1, 2], "dtype": "complex64"}).encode(), b"\0" * 16], "not a number type"),
    ([json.dumps({"shape": "1x2", "dtype": "uint8"}).encode(), b"\0\0"], "'shape' must be a list"),
    ([json.dumps({"shape": [1, 2], "dtype": "uint8"}).encode(), b"\0\0", b"extra"], "has 2 frame(s)"),
])
def test_a_malformed_request_gets_a_clear_zero_answer(ready: FrigateClient, frames, traffic_data, frames_sent,
                                                      expected) -> None:
    assert expected in error_of(ready.ask(frames_sent))
    np.testing.assert_allclose(decode(ready.raw_request(frames[9])), reference_rows(traffic_data, frames[9]), atol=1e-6)


def test_an_unknown_model_that_is_not_a_tflite_model_is_refused(ready: FrigateClient, frames, traffic_data) -> None:
    assert ready.query("nothing_here.tflite") == {"model_available": False, "model_loaded": False}
    answer = ready.upload(b"this is not a flatbuffer" * 10, name="nothing_here.tflite")
    assert answer["model_saved"] is False and answer["model_loaded"] is False
    assert "nothing_here.tflite" in answer["error"]
    onnx = ready.query("yolov9.onnx")
    assert onnx["model_available"] is False and "is not a .tflite file" in onnx["error"]
    answer = ready.upload(b"onnx bytes", name="yolov9.onnx")
    assert answer["model_saved"] is False and "is not a .tflite file" in answer["error"]
    answer = ready.upload(b"x", name="../escape.tflite")
    assert answer["model_saved"] is False and "must be a file name" in answer["error"]
    np.testing.assert_allclose(decode(ready.raw_request(frames[5])), reference_rows(traffic_data, frames[5]), atol=1e-6)


def test_a_model_that_is_not_a_detector_is_refused_by_name(ready: FrigateClient, frames, traffic_data) -> None:
    answer = ready.query(f"{CLASSIFIER}.tflite")
    assert answer["model_available"] is True and answer["model_loaded"] is False
    assert "is not an SSD detector" in answer["error"]
    np.testing.assert_allclose(decode(ready.raw_request(frames[5])), reference_rows(traffic_data, frames[5]), atol=1e-6)


def test_a_connection_without_handshake_gets_the_one_detector_that_fits(ready: FrigateClient, daemon, frames,
                                                                         traffic_data) -> None:
    fresh = FrigateClient(daemon.endpoint, traffic_data / MODEL_FILE, timeout_ms=5000)
    try:
        np.testing.assert_allclose(decode(fresh.raw_request(frames[1])), reference_rows(traffic_data, frames[1]),
                                   atol=1e-6)
        assert "no ready detector takes" in error_of(fresh.raw_request(np.zeros((1, 8, 8, 3), np.uint8)))
    finally:
        fresh.close()


# ---- configuration and the optional dependency (no daemon) ----


@pytest.mark.parametrize("value, expected", [
    (["tcp://127.0.0.1:5555"], "must be ipc:///ABSOLUTE/PATH"),
    (["ipc://relative/path"], "must be ipc:///ABSOLUTE/PATH"),
    (["ipc:///" + "x" * 120], "at most 107"),
    (["ipc:///run/a.ipc", "ipc:///run/a.ipc"], "twice"),
    ([3], "list of ipc:///PATH strings"),
    (["ipc:///run/edgetpud/edgetpud.sock"], "also a gRPC 'listen' socket"),
])
def test_zmq_listen_is_validated(value: Any, expected: str) -> None:
    with pytest.raises(ConfigError, match="zmq_listen") as info:
        build_config({"zmq_listen": value, "devices": ["mock:1"]})
    assert expected in str(info.value)


def test_zmq_timeout_s_defaults_to_frigates_timeout_and_must_be_positive() -> None:
    assert build_config({"devices": ["mock:1"]}).zmq_timeout_s == 0.2
    assert build_config({"devices": ["mock:1"], "zmq_timeout_s": 1.5}).zmq_timeout_s == 1.5
    for bad in (0, -1, "soon"):
        with pytest.raises(ConfigError, match="zmq_timeout_s"):
            build_config({"devices": ["mock:1"], "zmq_timeout_s": bad})


def test_zmq_listen_takes_ipc_paths() -> None:
    config = build_config({"zmq_listen": ["ipc:///run/edgetpud/frigate.ipc"], "devices": ["mock:1"]})
    assert config.zmq_listen == ["ipc:///run/edgetpud/frigate.ipc"]
    assert build_config({"devices": ["mock:1"]}).zmq_listen == []


def test_without_pyzmq_zmq_listen_is_a_clear_usage_error(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['zmq'] = None; from edgetpud.daemon.main import main; "
            f"sys.exit(main(['--device', 'mock:1', '--models', '{tmp_path}', '--state-dir', '{tmp_path}',"
            f" '--listen', 'unix:{tmp_path}/s.sock', '--zmq-listen', 'ipc://{tmp_path}/f.ipc']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "needs pyzmq" in done.stderr and "edgetpud[frigate]" in done.stderr


# ---- the protocol's values (no daemon) ----


def test_detection_rows_are_frigates_layout() -> None:
    # the postprocess's order: boxes as ymin, xmin, ymax, xmax; the last one past the count
    boxes = np.array([[0.2, 0.1, 0.4, 0.3], [0.6, 0.5, 0.8, 0.7], [0.3, 0.2, 0.1, 0.0], [0, 0, 1, 1]], np.float32)
    rows = protocol.detection_rows(boxes, np.array([2, 1, 3, 4], np.float32),
                                   np.array([0.3, 0.9, 0.5, 0.99], np.float32), count=3)
    assert rows.shape == (20, 6) and rows.dtype == np.float32
    np.testing.assert_allclose(rows[0], [1, 0.9, 0.6, 0.5, 0.8, 0.7])  # ymin, xmin, ymax, xmax
    np.testing.assert_allclose(rows[1], [3, 0.5, 0.1, 0.0, 0.3, 0.2])  # swapped corners put right
    assert not rows[2:].any()  # the 0.3 detection is under Frigate's 0.4, the 0.99 one past the count
    scores = np.array([0.5 + i / 100 for i in range(30)], np.float32)
    many = protocol.detection_rows(np.tile([[0, 0, 1, 1]], (30, 1)).astype(np.float32), np.ones(30, np.float32),
                                   scores, count=30)
    assert many[:, 1].min() >= 0.59 and many[0, 1] == np.float32(0.79)
    ties = protocol.detection_rows(np.zeros((3, 4), np.float32), np.array([7, 8, 9], np.float32),
                                   np.full(3, 0.5, np.float32), count=3)
    assert list(ties[:3, 0]) == [7, 8, 9]  # equal scores keep the model's order


def test_model_names_are_tflite_file_names() -> None:
    assert protocol.model_bundle_name("traffic_model.tflite") == "traffic_model"
    for bad in ("model.onnx", ".tflite", "/config/model.tflite", "a\\b.tflite"):
        with pytest.raises(protocol.ProtocolError):
            protocol.model_bundle_name(bad)

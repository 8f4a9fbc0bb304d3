"""Recurrent models end to end: per-stream state, KServe sequences, and the real traffic detector.

The daemon serves ``counter`` (state_out = state_in + x, tests/stateful.py), whose answers show
which state each frame started from, and ``traffic_model`` as scripts/fetch_models lays it out.
"""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List

import grpc
import numpy as np
import pytest

from daemon_fixture import RealDaemon, ctl
from edgetpud.daemon.client import Client
from edgetpud.protos.kserve import grpc_predict_v2_pb2 as kpb
from edgetpud.protos.kserve import grpc_predict_v2_pb2_grpc as kgrpc
from stateful import write_counter
from test_kserve import needs_tritonclient, run_python

pytestmark = pytest.mark.slow  # starts the daemon

ROOT = Path(__file__).resolve().parent.parent
IDLE_S = 2.0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: Any, test_data: Path, traffic_data: Path) -> Iterator[RealDaemon]:
    d = RealDaemon(tmp_path_factory.mktemp("video"), test_data, bundles=[])
    write_counter(d.models_dir / "counter")
    subprocess.run([sys.executable, str(ROOT / "scripts/fetch_models"), "--from", str(test_data), "--out",
                    str(d.models_dir), "--bundle", "traffic_model", "--no-images", "-q"], check=True)
    with d.config.open("a") as fh:
        fh.write(f"sequence_idle_s = {IDLE_S}\nsequence_limit = 8\n")
    d.start()
    yield d
    d.stop()


def x(value: float) -> np.ndarray:
    return np.full((1, 4), value, np.float32)


class Camera:
    """A stream fed one frame at a time, so that two cameras can be interleaved exactly."""

    def __init__(self, client: Client, model: str = "counter") -> None:
        self.frames: "queue.Queue[Any]" = queue.Queue()

        def frames() -> Iterator[Any]:
            while (item := self.frames.get()) is not None:
                yield item
        self.answers = client.stream(model, frames(), task="raw")

    def send(self, frame_id: int, value: Any, reset: bool = False) -> Any:
        self.frames.put((frame_id, {"x": x(value)} if not isinstance(value, dict) else value, reset))
        return next(self.answers)

    def close(self) -> None:
        self.frames.put(None)
        assert list(self.answers) == []


def total(answer: Any) -> float:
    assert answer.ok, answer.error
    values = answer.result.outputs["state_out"]
    assert np.all(values == values.flat[0])
    return float(values.flat[0])


def test_two_interleaved_streams_each_carry_their_own_state(daemon: RealDaemon) -> None:
    with Client(daemon.address) as client:
        a, b = Camera(client), Camera(client)
        seen = [total(a.send(1, 1)), total(b.send(1, 10)), total(a.send(2, 1)), total(b.send(2, 10)),
                total(a.send(3, 1))]
        assert seen == [1, 10, 2, 20, 3]
        # a unary call in between starts from the initial state and leaves both streams alone
        assert client.invoke("counter", {"x": x(5)}).outputs["state_out"].tolist() == [[5] * 4]
        assert total(b.send(3, 10)) == 30
        # a frame asks for a reset: it starts afresh, and the next frames carry on from it
        assert total(a.send(4, 7, reset=True)) == 7
        assert total(a.send(5, 1)) == 8
        a.close()
        b.close()


def test_a_failed_frame_leaves_the_state_as_it_was(daemon: RealDaemon) -> None:
    with Client(daemon.address) as client:
        cam = Camera(client)
        assert total(cam.send(1, 2)) == 2
        bad = cam.send(2, {"x": np.ones((1, 5), np.float32)})  # wrong shape: the frame fails
        assert bad.status == "failed" and bad.error.code == grpc.StatusCode.INVALID_ARGUMENT
        sent_state = cam.send(3, {"x": x(1), "state_in": x(100)})  # the stream carries the state itself
        assert sent_state.status == "failed" and "recurrent state" in sent_state.error.message
        assert total(cam.send(4, 2)) == 4
        cam.close()


def test_a_dropped_frame_leaves_the_state_as_it_was(daemon: RealDaemon) -> None:
    """Latest-wins with one frame in flight on a slow device: the frames replaced while one runs never
    touch the state, so the sum counts exactly the frames answered ok."""
    with Client(daemon.address) as client:
        client.mock.set_latency("mock:0", 0.05)
        try:
            frames = [(n, {"x": x(1)}) for n in range(1, 41)]
            answers = list(client.stream("counter", iter(frames), task="raw", latest_frame_wins=True,
                                         max_in_flight=1))
        finally:
            client.mock.set_latency("mock:0", None)
    ok = [a for a in answers if a.ok]
    dropped = [a for a in answers if a.status == "dropped"]
    assert dropped, "no frame was dropped: the test did not test anything"
    assert [total(a) for a in ok] == list(range(1, len(ok) + 1))
    assert len(ok) + len(dropped) == 40


def _infer(stub: Any, value: float, **params: Any) -> Any:
    request = kpb.ModelInferRequest(model_name="counter")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(x(value).tobytes())
    for key, v in params.items():
        if isinstance(v, bool):
            request.parameters[key].bool_param = v
        elif isinstance(v, int):
            request.parameters[key].int64_param = v
        else:
            request.parameters[key].string_param = v
    reply = stub.ModelInfer(request, timeout=30)
    return float(np.frombuffer(reply.raw_output_contents[0], np.float32)[0])


def test_kserve_sequences_carry_state_per_sequence_id(daemon: RealDaemon) -> None:
    with grpc.insecure_channel(daemon.address) as channel:
        stub = kgrpc.GRPCInferenceServiceStub(channel)
        assert _infer(stub, 1, sequence_id=41, sequence_start=True) == 1
        assert _infer(stub, 5, sequence_id="cam-7", sequence_start=True) == 5
        assert _infer(stub, 1, sequence_id=41) == 2
        assert _infer(stub, 5, sequence_id="cam-7") == 10
        assert _infer(stub, 3) == 3  # no sequence: a fresh state
        assert _infer(stub, 1, sequence_id=41, sequence_end=True) == 3
        with pytest.raises(grpc.RpcError) as ended:
            _infer(stub, 1, sequence_id=41)
        assert ended.value.code() == grpc.StatusCode.NOT_FOUND
        assert "never started or has ended" in ended.value.details()
        assert _infer(stub, 1, sequence_id=41, sequence_start=True) == 1  # started again, from scratch


@pytest.mark.parametrize("params, code, words", [
    ({"sequence_id": 999}, grpc.StatusCode.NOT_FOUND, "sequence_start=true"),
    ({"sequence_id": 5, "sequence_start": "yes"}, grpc.StatusCode.INVALID_ARGUMENT, "must be a bool_param"),
    ({"sequence_start": True}, grpc.StatusCode.INVALID_ARGUMENT, "needs a sequence_id"),
])
def test_bad_sequence_requests_fail_clearly_and_the_daemon_serves_on(daemon: RealDaemon, params: dict,
                                                                    code: grpc.StatusCode, words: str) -> None:
    with grpc.insecure_channel(daemon.address) as channel:
        stub = kgrpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            _infer(stub, 1, **params)
        assert failed.value.code() == code
        assert words in failed.value.details()
        assert _infer(stub, 2) == 2


def test_kserve_a_state_input_sent_in_a_sequence_is_refused(daemon: RealDaemon) -> None:
    with grpc.insecure_channel(daemon.address) as channel:
        stub = kgrpc.GRPCInferenceServiceStub(channel)
        request = kpb.ModelInferRequest(model_name="counter")
        for name in ("x", "state_in"):
            request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
            request.raw_input_contents.append(x(1).tobytes())
        request.parameters["sequence_id"].int64_param = 77
        request.parameters["sequence_start"].bool_param = True
        with pytest.raises(grpc.RpcError) as failed:
            stub.ModelInfer(request, timeout=30)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "recurrent state" in failed.value.details()


def test_a_sequence_idle_past_its_timeout_is_forgotten(daemon: RealDaemon) -> None:
    with grpc.insecure_channel(daemon.address) as channel:
        stub = kgrpc.GRPCInferenceServiceStub(channel)
        assert _infer(stub, 1, sequence_id=55, sequence_start=True) == 1
        time.sleep(IDLE_S + 0.5)
        with pytest.raises(grpc.RpcError) as expired:
            _infer(stub, 1, sequence_id=55)
        assert expired.value.code() == grpc.StatusCode.NOT_FOUND
        assert f"idle for more than {IDLE_S:g} s" in expired.value.details()
        assert _infer(stub, 4) == 4


@needs_tritonclient
def test_tritonclient_sequences_carry_state(daemon: RealDaemon) -> None:
    result = run_python(f"""
        import json
        import numpy as np
        import tritonclient.grpc as tc
        client = tc.InferenceServerClient("{daemon.address}")
        def step(value, **seq):
            data = tc.InferInput("x", [1, 4], "FP32")
            data.set_data_from_numpy(np.full((1, 4), value, np.float32))
            return float(client.infer("counter", [data], **seq).as_numpy("state_out")[0, 0])
        seen = [step(1, sequence_id=901, sequence_start=True), step(2, sequence_id=901),
                step(10, sequence_id=902, sequence_start=True), step(3, sequence_id=901, sequence_end=True),
                step(10, sequence_id=902, sequence_end=True)]
        try:
            step(1, sequence_id=901)
            gone = "served"
        except tc.InferenceServerException as exc:
            gone = exc.status()
        print(json.dumps({{"seen": seen, "gone": gone}}))
    """)
    assert result["seen"] == [1, 3, 10, 6, 20]
    assert result["gone"] == "StatusCode.NOT_FOUND"


# ---------------------------------------------------------------- the real traffic detector

def reference_loop(traffic_data: Path, bundle_dir: Path, frames: List[Path]) -> List[List[tuple]]:
    """Google's loop (tflite_object_detection.py) in process: state outputs 4, 5 copied to inputs 1, 2,
    from zeros; detections over 0.4 as (class, score, ymin, xmin, ymax, xmax). The image tensor is
    made by the bundle's own preprocessing, so only the state handling and decoding are compared."""
    from ai_edge_litert.interpreter import Interpreter

    from edgetpud.daemon.model.session import ModelSession
    from edgetpud.daemon.model.bundle import ModelBundle

    session = ModelSession(ModelBundle.load(bundle_dir))
    interpreter = Interpreter(model_path=str(traffic_data / "traffic_model.tflite"))
    interpreter.allocate_tensors()
    ins, outs = interpreter.get_input_details(), interpreter.get_output_details()
    c = np.zeros(ins[1]["shape"], ins[1]["dtype"])
    h = np.zeros(ins[2]["shape"], ins[2]["dtype"])
    found = []
    for frame in frames:
        image = session.preprocess(str(frame), "detect")[0][0]
        interpreter.set_tensor(ins[0]["index"], image)
        interpreter.set_tensor(ins[1]["index"], c)
        interpreter.set_tensor(ins[2]["index"], h)
        interpreter.invoke()
        boxes, classes, scores, count = (np.squeeze(interpreter.get_tensor(outs[i]["index"])) for i in range(4))
        c, h = (interpreter.get_tensor(outs[i]["index"]).copy() for i in (4, 5))
        found.append(sorted(((int(classes[i]), float(scores[i]), *map(float, boxes[i]))
                             for i in range(int(count)) if scores[i] >= 0.4), key=lambda d: (-d[1], d)))
    return found


def test_the_stream_detects_as_the_reference_loop_does(daemon: RealDaemon, traffic_data: Path) -> None:
    frames = sorted((traffic_data / "frames").glob("*.bmp"))
    assert len(frames) == 10
    expected = reference_loop(traffic_data, daemon.models_dir / "traffic_model", frames)
    with Client(daemon.address) as client:
        answers = list(client.stream("traffic_model", iter(frames), task="detect", max_in_flight=2))
    got = []
    for answer in answers:
        assert answer.ok, answer.error
        got.append(sorted(((o.id, o.score, o.normalized[1], o.normalized[0], o.normalized[3], o.normalized[2])
                           for o in answer.result.objects), key=lambda d: (-d[1], d)))
        assert all(o.label == ("sedan", "pickup_suv_van", "large_veh_bus")[o.id] for o in answer.result.objects)
    assert [len(f) for f in got] == [len(f) for f in expected]
    assert all(len(f) >= 1 for f in got), "a vehicle is found on every frame"
    for ours, theirs in zip(got, expected):
        for a, b in zip(ours, theirs):
            assert a[0] == b[0]
            assert a[1] == pytest.approx(b[1], abs=1e-6)
            # normalized boxes of the source; the frames are resized (no letterbox), so they are the model's
            assert a[2:] == pytest.approx([min(max(v, 0.0), 1.0) for v in b[2:]], abs=1e-5)


def test_edgetpuctl_detect_stream_prints_a_line_per_frame(daemon: RealDaemon, traffic_data: Path) -> None:
    result = ctl("--json", "detect", "--stream", "-m", "traffic_model", str(traffic_data / "frames"),
                 address=daemon.address)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)["results"]
    assert [Path(r["image"]).name for r in results] == [f"{n:04d}.bmp" for n in range(1, 11)]
    assert all(r["objects"] and r["objects"][0]["label"] == "pickup_suv_van" for r in results)
    text = ctl("detect", "--stream", "-m", "traffic_model", str(traffic_data / "frames" / "0005.bmp"),
               str(traffic_data / "frames" / "0006.bmp"), address=daemon.address)
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 2
    assert "pickup_suv_van 0.480" in text.stdout.splitlines()[0]


def test_edgetpuctl_detect_stream_refuses_a_folder_among_files(daemon: RealDaemon, traffic_data: Path) -> None:
    result = ctl("detect", "--stream", "-m", "traffic_model", str(traffic_data / "frames"),
                 str(traffic_data / "frames" / "0001.bmp"), address=daemon.address)
    assert result.returncode != 0 and "not folders among files" in result.stderr


def test_edgetpuctl_invoke_runs_a_raw_model(daemon: RealDaemon, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", x(2.5))
    result = ctl("--json", "invoke", "-m", "counter", "--input", f"x={tmp_path / 'x.npy'}", address=daemon.address)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["outputs"]["state_out"]["values"] == [2.5] * 4
    assert document["zeros"] == ["state_in"]
    bad = ctl("invoke", "-m", "counter", "--input", "nope=1.npy", address=daemon.address)
    assert bad.returncode != 0 and "cannot read 1.npy" in bad.stderr
    bad = ctl("invoke", "-m", "counter", "--input", f"nope={tmp_path / 'x.npy'}", address=daemon.address)
    assert bad.returncode != 0 and "has no input(s) ['nope']" in bad.stderr

"""The real edgetpud process over its unix socket: results, bad input, streams, health, reflection."""
from __future__ import annotations

import shutil
import threading
from typing import Dict, List, Tuple

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from daemon_fixture import real_daemon_fixture
from edgetpud.daemon.client import Client, ClientError, Frame
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

Code = grpc.StatusCode
SMALL = "mobilenet_v1_0.25_128_quant"
LARGE = "mobilenet_v1_0.5_160_quant"


daemon = real_daemon_fixture("e2e", [SMALL, LARGE])


@pytest.fixture
def cat(test_data):
    return (test_data / "cat.bmp").read_bytes()


@pytest.mark.parametrize("model, expected, min_score", [(SMALL, 283, 0.25), (LARGE, 286, 0.51)])
def test_classification_expectations_hold_over_grpc(client, cat, model, expected, min_score):
    result = client.classify(model, cat, top_k=3)
    assert any(c.id == expected and c.score >= min_score for c in result.classes), result.classes
    assert result.model == model and result.device == "mock:0" and result.version
    assert result.timing.invoke_s > 0 and result.timing.preprocess_s > 0
    assert result.classes[0].label is not None


def test_a_raw_frame_gives_the_same_answer_as_the_encoded_image(client, cat, test_data):
    rgb = np.asarray(Image.open(test_data / "cat.bmp").convert("RGB"))
    bgra = np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    padded = np.zeros((rgb.shape[0], rgb.shape[1] * 4 + 64), np.uint8)  # rows padded to a wider stride
    padded[:, :rgb.shape[1] * 4] = bgra.reshape(rgb.shape[0], -1)
    frame = Frame(padded.tobytes(), width=rgb.shape[1], height=rgb.shape[0], stride=padded.shape[1],
                  pixel_format="BGRA")
    from_frame = client.classify(SMALL, frame, top_k=3).classes
    from_file = client.classify(SMALL, cat, top_k=3).classes
    assert [c.id for c in from_frame] == [c.id for c in from_file]


def expect_error(call, code, *words):
    with pytest.raises(ClientError) as info:
        call()
    assert info.value.code == code, info.value
    for word in words:
        assert word.lower() in info.value.message.lower(), info.value.message
    return info.value


def test_an_undecodable_image_is_invalid_argument_and_the_daemon_serves_on(client, cat):
    expect_error(lambda: client.classify(SMALL, b"this is not an image"), Code.INVALID_ARGUMENT, "image")
    assert client.classify(SMALL, cat).classes


def test_a_frame_that_does_not_match_its_stride_is_invalid_argument(client, cat):
    short = Frame(b"\0" * 100, width=64, height=64, stride=64 * 3, pixel_format="RGB")
    expect_error(lambda: client.classify(SMALL, short), Code.INVALID_ARGUMENT, "stride")
    assert client.classify(SMALL, cat).classes


def test_a_message_over_the_limit_is_refused(client, cat):
    huge = b"\0" * (17 * 1024 * 1024)  # over the default 16 MiB max_message_bytes
    expect_error(lambda: client.classify(SMALL, huge), Code.RESOURCE_EXHAUSTED,
                 "over the daemon's limit of 16777216 bytes", "max_message_bytes")
    assert client.classify(SMALL, cat).classes


def test_a_1080p_raw_rgba_frame_fits(client):
    frame = Frame(b"\x80" * (1920 * 1080 * 4), width=1920, height=1080, pixel_format="RGBA")
    assert client.classify(SMALL, frame).classes


def test_an_unknown_model_is_not_found(client, cat):
    expect_error(lambda: client.classify("no_such_model", cat), Code.NOT_FOUND, "no_such_model")
    assert client.classify(SMALL, cat).classes


def test_wrong_tensor_shape_or_dtype_in_invoke_is_invalid_argument(client):
    expect_error(lambda: client.invoke(SMALL, [np.zeros((1, 64, 64, 3), np.uint8)]), Code.INVALID_ARGUMENT,
                 "shape")
    expect_error(lambda: client.invoke(SMALL, [np.zeros((1, 128, 128, 3), np.float32)]), Code.INVALID_ARGUMENT,
                 "dtype")
    out = client.invoke(SMALL, [np.zeros((1, 128, 128, 3), np.uint8)])
    assert list(out.outputs.values())[0].shape == (1, 1001)


def test_a_tensor_shape_whose_size_overflows_is_invalid_argument(daemon, client):
    """2**62 x 2**62 elements wrap numpy's int64 product to 0: the empty data then passed the size check."""
    request = pb.InvokeRequest(model=SMALL, inputs=[pb.Tensor(dtype="uint8", shape=[2 ** 62, 2 ** 62], data=b"")])
    with grpc.insecure_channel(daemon.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.InferenceStub(channel).Invoke(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"needs {2 ** 124} bytes, got 0" in info.value.details()
    assert client.invoke(SMALL, [np.zeros((1, 128, 128, 3), np.uint8)]).outputs  # still serving


def test_an_expired_deadline_is_deadline_exceeded(client, cat):
    client.mock.set_latency("mock:0", 0.5)
    try:
        expect_error(lambda: client.classify(SMALL, cat, timeout=0.1), Code.DEADLINE_EXCEEDED)
    finally:
        client.mock.set_latency("mock:0", None)
    assert client.classify(SMALL, cat).classes


def test_a_client_that_disconnects_mid_stream_does_not_disturb_the_daemon(daemon, client, cat):
    client.mock.set_latency("mock:0", 0.2)
    hang_up = threading.Event()

    def frames():
        yield from [cat] * 4
        hang_up.wait(30)
    try:
        camera = Client(daemon.address)
        results = camera.stream(SMALL, frames(), max_in_flight=2)
        assert next(results).ok
        camera.close()  # gone with frames still queued and running
        hang_up.set()
    finally:
        client.mock.set_latency("mock:0", None)
    assert client.classify(SMALL, cat).classes
    assert client.status().ready


def test_stream_keeps_frame_order(client, cat, test_data):
    bird = (test_data / "bird.bmp").read_bytes()
    frames = [(100 + i, cat if i % 2 == 0 else bird) for i in range(6)]
    results = list(client.stream(SMALL, frames, max_in_flight=3, top_k=1))
    assert [r.frame_id for r in results] == [100 + i for i in range(6)]
    assert all(r.ok for r in results)
    tops = [r.result.classes[0].id for r in results]
    assert tops[0::2] == [tops[0]] * 3 and tops[1::2] == [tops[1]] * 3 and tops[0] != tops[1]


def test_stream_latest_frame_wins_reports_dropped_frames(client, cat):
    client.mock.set_latency("mock:0", 0.3)  # frames arrive far faster than one is served
    try:
        results = list(client.stream(SMALL, [cat] * 12, latest_frame_wins=True, max_in_flight=1))
    finally:
        client.mock.set_latency("mock:0", None)
    assert [r.frame_id for r in results] == list(range(1, 13))
    assert results[0].ok and results[-1].ok
    assert {r.status for r in results} <= {"ok", "dropped"}
    assert all(r.result is None and r.error is None for r in results if r.status == "dropped")
    assert any(r.status == "dropped" for r in results)


def test_stream_reports_a_bad_frame_and_goes_on(client, cat):
    results = list(client.stream(SMALL, [cat, b"garbage", cat]))
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert results[1].error.code == Code.INVALID_ARGUMENT


def test_models_info_load_upload_unload(daemon, client, test_data):
    info = client.model_info(SMALL)
    assert info.state == "ready" and info.task == "classify" and info.edgetpu_compiled
    assert info.inputs[0].shape == (1, 128, 128, 3) and info.label_count == 1001
    assert info.report is not None and info.report["verdict"] in ("full", "partial", "none")
    copy = daemon.workdir / "copy_bundle"
    shutil.copytree(daemon.models_dir / SMALL, copy)
    loaded = client.load_model("copied", path=copy)
    assert loaded.name == "copied" and loaded.state == "ready"
    uploaded = client.load_model("uploaded", data=(test_data / f"{SMALL}.tflite").read_bytes())
    assert uploaded.state == "ready"
    assert client.invoke("uploaded", [np.zeros((1, 128, 128, 3), np.uint8)]).outputs
    for name in ("copied", "uploaded"):
        client.unload_model(name)
    expect_error(lambda: client.model_info("copied"), Code.NOT_FOUND)
    expect_error(lambda: client.load_model("broken", data=b"not a model"), Code.FAILED_PRECONDITION)
    expect_error(lambda: client.load_model("missing", path="/nonexistent/bundle"), Code.NOT_FOUND)


def test_devices_and_status(client):
    devices = client.devices()
    assert [d.id for d in devices] == ["mock:0"] and devices[0].kind == "mock" and devices[0].state == "ready"
    status = client.status()
    assert status.ready and {m.name for m in status.models} >= {SMALL, LARGE}


def test_health_is_serving_and_reflection_lists_the_services(daemon):
    with grpc.insecure_channel(daemon.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
            health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=30)
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert names >= {"edgetpud.v1.Inference", "edgetpud.v1.Models", "edgetpud.v1.Devices",
                         "edgetpud.v1.Daemon", "edgetpud.v1.MockControl", "inference.GRPCInferenceService",
                         "grpc.health.v1.Health"}
        # Reflection also serves the file descriptors, so tools like grpcurl can call methods.
        files = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="edgetpud.v1.Inference")]), timeout=30)
        assert any(a.file_descriptor_response.file_descriptor_proto for a in files)


def test_stream_without_config_is_invalid_argument(daemon):
    with grpc.insecure_channel(daemon.address) as channel:
        stub = pb_grpc.InferenceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Stream(iter([pb.StreamRequest(frame=pb.StreamFrame())]), timeout=30))
        assert info.value.code() == Code.INVALID_ARGUMENT


def test_unplug_and_replug_answer_with_the_devices_after_the_change(daemon, client, cat):
    from daemon_fixture import wait_for
    try:
        after_unplug = {d.id: d.state for d in client.mock.unplug("mock:0")}
        assert after_unplug["mock:0"] == "lost", after_unplug
    finally:
        after_replug = {d.id: d.state for d in client.mock.replug("mock:0")}
    assert after_replug["mock:0"] != "lost", after_replug
    wait_for(daemon.serving, timeout=60, what="SERVING after the replug")


def test_health_follows_an_unplugged_device(daemon, client, cat):
    from daemon_fixture import wait_for
    client.mock.unplug("mock:0")
    try:
        wait_for(lambda: not daemon.serving(), timeout=60, what="NOT_SERVING after the unplug")
        expect_error(lambda: client.classify(SMALL, cat, timeout=10), Code.UNAVAILABLE)
    finally:
        client.mock.replug("mock:0")
    wait_for(daemon.serving, timeout=60, what="SERVING after the replug")

    def serves() -> bool:
        try:
            return bool(client.classify(SMALL, cat).classes)
        except ClientError:
            return False
    wait_for(serves, timeout=60, what="a classify after the replug")


def test_keep_all_streams_that_overfill_the_device_queue_wait_instead_of_failing(daemon, client, cat):
    """Two streams of 16 frames in flight each outnumber the device's queue (16) and slots (4):
    a keep-all frame waits for queue room (and the stream's reader pauses), where it used to fail
    RESOURCE_EXHAUSTED at once and let the next frame in to fail too."""
    frames = 40
    config = pb.StreamConfig(model=SMALL, task=pb.TASK_CLASSIFY, frame_policy=pb.FRAME_POLICY_KEEP_ALL,
                             max_in_flight=16)
    answers: Dict[int, List[Tuple[int, int, int]]] = {}

    def one_stream(index: int) -> None:
        messages = [pb.StreamRequest(config=config)] + [
            pb.StreamRequest(frame=pb.StreamFrame(image=pb.Image(encoded=cat))) for _ in range(frames)]
        with grpc.insecure_channel(daemon.address) as channel:
            replies = pb_grpc.InferenceStub(channel).Stream(iter(messages), timeout=60)
            answers[index] = [(r.frame_id, r.status, r.error.code) for r in replies]

    client.mock.set_latency("mock:0", 0.02)
    try:
        streams = [threading.Thread(target=one_stream, args=(i,)) for i in range(2)]
        for t in streams:
            t.start()
        for t in streams:
            t.join(90)
    finally:
        client.mock.set_latency("mock:0", None)
    for index in range(2):
        got = answers[index]
        assert [frame_id for frame_id, _, _ in got] == list(range(1, frames + 1))  # one answer each, in order
        failed = [(frame_id, code) for frame_id, status, code in got if status != pb.FRAME_STATUS_OK]
        assert failed == [], failed
    assert client.classify(SMALL, cat).classes  # and the daemon goes on serving


@pytest.mark.parametrize("call, args", [
    ("set_latency", (float("nan"),)), ("set_latency", (float("inf"),)),
    ("set_temperature", (float("nan"),)), ("set_temperature", (float("-inf"),)),
    ("inject_fault", ("timeout", 1, float("inf"))), ("inject_fault", ("abort", 1, 0.0, "", float("nan"))),
])
def test_mock_controls_refuse_numbers_that_are_not_finite(client, cat, call, args):
    """A NaN latency used to be stored (every invocation then failed) and a NaN temperature was INTERNAL."""
    with pytest.raises(ClientError) as info:
        getattr(client.mock, call)("mock:0", *args)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "finite" in info.value.message
    assert client.classify(SMALL, cat, top_k=1).classes

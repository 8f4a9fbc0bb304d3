"""The gRPC layer against a fake service: translation, status codes, streams, health, reflection."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from daemon_fixture import FakeService, InProcessServer, wait_for
from edgetpud.daemon.api.stream import FramePipeline
from edgetpud.daemon.client import Client, ClientError, Frame
from edgetpud.daemon.config import Config
from edgetpud.daemon.errors import ImageError, ModelError, NotFoundError, PreconditionError, ResourceExhaustedError
from edgetpud.daemon.scheduler import DeadlineExceededError
from edgetpud.hal.errors import DeviceUnavailableError, ModelRuntimeError
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb

Code = grpc.StatusCode


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    sock = tmp_path_factory.mktemp("api") / "edgetpud.sock"
    service = FakeService()
    server = InProcessServer(service, Config(listen=[f"unix:{sock}"], socket_mode=0o660)).start()
    yield service, sock
    server.stop()


@pytest.fixture
def fake(served):
    service, _ = served
    service.fail = None
    service.gate = None
    service.requests.clear()
    return service


@pytest.fixture
def client(served):
    _, sock = served
    with Client(f"unix:{sock}", timeout=10) as c:
        yield c


def test_socket_gets_the_configured_mode(served):
    _, sock = served
    assert sock.stat().st_mode & 0o777 == 0o660


def test_classify_translates_request_and_result(fake, client):
    result = client.classify("cls", b"jpeg-bytes", top_k=2, threshold=0.1, crop=(1, 2, 3, 4))
    model, task, request, deadline, version = fake.requests[-1]
    assert (model, task, version) == ("cls", "classify", None)
    assert request.image.data == b"jpeg-bytes" and request.image.crop == (1, 2, 3, 4)
    assert request.options == {"top_k": 2, "threshold": pytest.approx(0.1)}
    assert deadline is not None  # the client's timeout travels as an absolute deadline
    assert (result.model, result.version, result.device) == ("cls", "1", "mock:0")
    assert result.timing.invoke_s == pytest.approx(0.003) and result.timing.postprocess_s == pytest.approx(0.004)
    assert [(c.id, c.label) for c in result.classes] == [(283, "tiger cat"), (7, None)]


def test_raw_frame_is_passed_with_a_packed_stride(fake, client):
    pixels = np.zeros((2, 3, 4), np.uint8)
    client.classify("cls", pixels, version="1")
    frame = fake.requests[-1][2].image.frame
    assert (frame.width, frame.height, frame.stride, frame.pixel_format) == (3, 2, 12, "RGBA")
    assert fake.requests[-1][4] == "1"
    client.classify("cls", Frame(b"\0" * 40, width=3, height=2, stride=20, pixel_format="BGR"))
    frame = fake.requests[-1][2].image.frame
    assert (frame.stride, frame.pixel_format, len(frame.data)) == (20, "BGR", 40)


def test_detect_embed_and_invoke(fake, client):
    objects = client.detect("cls", b"x").objects
    assert objects[0].bbox == (1.0, 2.0, 30.0, 40.0) and objects[0].label == "person"
    np.testing.assert_array_equal(client.embed("cls", b"x", normalize=True).embedding, np.arange(4, dtype=np.float32))
    assert fake.requests[-1][2].options == {"normalize": True}
    out = client.invoke("raw", {"input": np.array([[1, 2, 3, 4]], np.uint8)})
    assert fake.requests[-1][1] == "raw"
    np.testing.assert_array_equal(out.outputs["output"], np.array([[2, 4, 6, 8]], np.float32))


@pytest.mark.parametrize("error, code", [
    (ImageError("cannot decode the image"), Code.INVALID_ARGUMENT),
    (ModelRuntimeError("input 'x' must have shape [1, 4]"), Code.INVALID_ARGUMENT),
    (NotFoundError("model 'nope' is not loaded"), Code.NOT_FOUND),
    (PreconditionError("no device holds the model"), Code.FAILED_PRECONDITION),
    (ModelError("not a TFLite flatbuffer"), Code.FAILED_PRECONDITION),
    (ResourceExhaustedError("queue of mock:0 is full (16)"), Code.RESOURCE_EXHAUSTED),
    (DeviceUnavailableError("mock:0 was unplugged"), Code.UNAVAILABLE),
    (DeadlineExceededError("deadline passed in the queue"), Code.DEADLINE_EXCEEDED),
    (RuntimeError("boom"), Code.INTERNAL),
])
def test_service_errors_map_to_codes_with_their_message(fake, client, error, code):
    fake.fail = error
    with pytest.raises(ClientError) as info:
        client.classify("cls", b"x")
    assert info.value.code == code
    assert str(error) in info.value.message
    fake.fail = None
    assert client.classify("cls", b"x").classes  # the server keeps serving


def test_malformed_requests_are_invalid_argument(client):
    with pytest.raises(ClientError) as info:
        client.invoke("raw", None)
    assert info.value.code == Code.INVALID_ARGUMENT and "no input" in info.value.message
    from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb, edgetpud_pb2_grpc as pb_grpc
    stub = pb_grpc.InferenceStub(client._channel)
    bad = pb.InvokeRequest(model="raw", inputs=[pb.Tensor(name="input", dtype="uint8", shape=[1, 4], data=b"\0")])
    with pytest.raises(grpc.RpcError) as rpc:
        stub.Invoke(bad, timeout=10)
    assert rpc.value.code() == Code.INVALID_ARGUMENT and "needs 4 bytes, got 1" in rpc.value.details()
    nodtype = pb.InvokeRequest(model="raw", inputs=[pb.Tensor(name="input", dtype="complex", shape=[1])])
    with pytest.raises(grpc.RpcError) as rpc:
        stub.Invoke(nodtype, timeout=10)
    assert rpc.value.code() == Code.INVALID_ARGUMENT and "dtype" in rpc.value.details()


def test_message_over_the_limit_is_refused(fake, client):
    too_big = b"\0" * (Config().max_message_bytes + 1)
    with pytest.raises(ClientError) as info:
        client.classify("cls", too_big)
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert client.classify("cls", b"x").classes


def test_models_devices_status_and_mock(fake, client):
    assert {m.name for m in client.models()} >= {"cls", "raw"}
    info = client.model_info("cls")
    assert info.report["verdict"] == "full" and info.report["summary"] == {"tpu_ops": 1, "cpu_ops": 0}
    assert info.inputs[0].shape == (1, 8, 8, 3) and info.inputs[0].dtype == "uint8"
    loaded = client.load_model("new", path="/models/new")
    assert loaded.name == "new" and fake.loads[-1] == ("new", "/models/new", None)
    client.load_model("up", data=b"m" * (3 * 1024 * 1024 + 5))
    assert fake.loads[-1][0] == "up" and len(fake.loads[-1][2]) == 3 * 1024 * 1024 + 5
    client.unload_model("new")
    client.unload_model("up")
    with pytest.raises(ClientError) as info:
        client.model_info("new")
    assert info.value.code == Code.NOT_FOUND
    device = client.devices()[0]
    assert (device.id, device.kind, device.state, device.temperature_c, device.models) == \
        ("mock:0", "mock", "ready", 41.5, ["cls"])
    status = client.status()
    assert status.ready and status.devices[0].id == "mock:0"
    client.mock.unplug("mock:0")
    client.mock.inject_fault("mock:0", "timeout", 2, seconds=0.5)
    client.mock.set_temperature("mock:0", 91.0)
    client.mock.set_latency("mock:0", 0.02)
    client.mock.set_latency("mock:0", None)
    client.mock.clear_faults("mock:0")
    assert fake.mock_control.calls[-6:] == [
        ("unplug", "mock:0"), ("inject", "mock:0", "timeout", 2, {"seconds": 0.5}),
        ("set_temperature", "mock:0", 91.0), ("set_latency", "mock:0", 0.02), ("set_latency", "mock:0", None),
        ("clear_faults", "mock:0")]
    with pytest.raises(ClientError) as info:
        client.mock.inject_fault("mock:0", "melt")
    assert info.value.code == Code.INVALID_ARGUMENT and "melt" in info.value.message
    with pytest.raises(ClientError) as info:
        client.mock.inject_fault("mock:9", "abort")
    assert info.value.code == Code.NOT_FOUND and "mock:9" in info.value.message


def test_stream_answers_in_frame_order_even_when_frames_finish_out_of_order(fake, client):
    delays = [b"delay:0.05", b"delay:0.0", b"delay:0.03", b"delay:0.0", b"ok"]
    results = list(client.stream("cls", delays, max_in_flight=4))
    assert [r.frame_id for r in results] == [1, 2, 3, 4, 5]
    assert all(r.status == "ok" and r.result.classes[0].id == 283 for r in results)


def test_stream_reports_failed_frames_and_goes_on(fake, client):
    results = list(client.stream("cls", [(10, b"x"), (11, b"bad"), (12, b"x")]))
    assert [(r.frame_id, r.status) for r in results] == [(10, "ok"), (11, "failed"), (12, "ok")]
    assert results[1].error.code == Code.INVALID_ARGUMENT and "decode" in results[1].error.message


def test_stream_latest_frame_wins_answers_every_frame_once_in_order(fake, client, monkeypatch):
    fake.close_gate()
    frames = [b"x"] * 8
    admitted = []
    admit = FramePipeline._admit

    async def counting_admit(self, frame):
        await admit(self, frame)
        admitted.append(frame)  # counted only: what the pipeline carries is its servicer's business
    monkeypatch.setattr(FramePipeline, "_admit", counting_admit)

    def sent_all():
        for frame in frames:
            yield frame
        # frame 1 holds the only slot until the gate opens: open it once the daemon has read every frame
        end = time.monotonic() + 5
        while len(admitted) < len(frames) and time.monotonic() < end:
            time.sleep(0.01)
        fake.open_gate()
    results = list(client.stream("cls", sent_all(), latest_frame_wins=True, max_in_flight=1))
    assert [r.frame_id for r in results] == list(range(1, 9))
    # 1 runs, 2..7 each wait until the next replaces them, 8 waits for 1 and runs
    assert [r.status for r in results] == ["ok"] + ["dropped"] * 6 + ["ok"]
    assert results[0].ok and results[-1].ok  # the newest frame is never dropped
    assert all(r.result is None for r in results if r.status == "dropped")
    assert all(r.result.classes[0].id == 283 for r in results if r.ok)


def test_stream_edge_cases(fake, client):
    assert list(client.stream("cls", [])) == []  # config, then the client is done
    with pytest.raises(ClientError) as info:
        list(client.stream("nope", [b"x"]))
    assert info.value.code == Code.NOT_FOUND and "nope" in info.value.message


def test_stream_must_start_with_a_config(client):
    from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb, edgetpud_pb2_grpc as pb_grpc
    stub = pb_grpc.InferenceStub(client._channel)
    with pytest.raises(grpc.RpcError) as rpc:
        list(stub.Stream(iter([pb.StreamRequest(frame=pb.StreamFrame())]), timeout=10))
    assert rpc.value.code() == Code.INVALID_ARGUMENT and "StreamConfig" in rpc.value.details()


def test_client_disconnect_mid_stream_cancels_its_queued_work(served, fake, client):
    _, sock = served
    fake.close_gate()
    fake.cancelled = fake.started = 0
    hang_up = threading.Event()
    outcome = []

    def frames():
        yield from [b"x"] * 3
        hang_up.wait(10)  # keep the request side open until the client goes away

    camera = Client(f"unix:{sock}")
    results = camera.stream("cls", frames(), max_in_flight=2)

    def consume():
        try:
            outcome.extend(results)
        except ClientError as exc:
            outcome.append(exc.code)
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    wait_for(lambda: fake.started >= 2, what="two frames to start on the device")
    camera.close()  # the camera app goes away mid-stream
    hang_up.set()
    wait_for(lambda: fake.cancelled >= 2, what="the running frames to be cancelled")
    consumer.join(10)
    assert outcome == [Code.CANCELLED]
    fake.gate = None
    assert client.classify("cls", b"x").classes  # the daemon serves the next request


def test_health_follows_device_states(fake, client):
    stub = health_pb2_grpc.HealthStub(client._channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == serving
    name = "edgetpud.v1.Inference"
    assert stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == serving
    fake.device_list[0].state = "lost"
    try:
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        fake.device_list[0].state = "ready"
    with pytest.raises(grpc.RpcError) as rpc:
        stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10)
    assert rpc.value.code() == Code.NOT_FOUND


def test_health_watch_reports_changes(fake, client):
    stub = health_pb2_grpc.HealthStub(client._channel)
    updates = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    try:
        assert next(updates).status == health_pb2.HealthCheckResponse.SERVING
        fake.device_list[0].state = "failed"
        assert next(updates).status == health_pb2.HealthCheckResponse.NOT_SERVING
        fake.device_list[0].state = "ready"
        assert next(updates).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        fake.device_list[0].state = "ready"
        updates.cancel()


def test_every_request_is_observed_in_the_metrics(fake, client, monkeypatch):
    seen = []

    class Recorder:
        @staticmethod
        def observe_request(model, device, code, seconds):
            seen.append((model, device, code, seconds >= 0))
    monkeypatch.setattr(fake, "metrics", Recorder, raising=False)  # the servicers count in service.metrics
    client.classify("cls", b"x")
    with pytest.raises(ClientError):
        client.classify("unknown", b"x")
    list(client.stream("cls", [b"x"]))
    assert seen == [("cls", "mock:0", "OK", True), ("unknown", "", "NOT_FOUND", True),
                    ("cls", "mock:0", "OK", True)]


def test_reflection_lists_every_service(client):
    stub = reflection_pb2_grpc.ServerReflectionStub(client._channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=10)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert names >= {"edgetpud.v1.Inference", "edgetpud.v1.Models", "edgetpud.v1.Devices", "edgetpud.v1.Daemon",
                     "edgetpud.v1.MockControl", "inference.GRPCInferenceService", "grpc.health.v1.Health",
                     "grpc.reflection.v1alpha.ServerReflection"}


def test_the_daemon_hands_the_service_a_view_into_the_request(fake, client):
    """The encoded bytes and a frame's pixels reach the service as views into the request, not copies."""
    client.classify("cls", b"jpeg-bytes")
    client.classify("cls", Frame(data=bytes(60), width=4, height=5))
    encoded, framed = (request.image for _, _, request, _, _ in fake.requests[-2:])
    assert isinstance(encoded.data, memoryview) and bytes(encoded.data) == b"jpeg-bytes"
    assert isinstance(framed.frame.data, memoryview) and bytes(framed.frame.data) == bytes(60)


def test_an_image_sent_twice_is_merged_as_protobuf_merges_it(fake, served):
    """Two serialized requests back to back are one merged request: the later source wins, the crop stays."""
    _, sock = served
    first = pb.ClassifyRequest(model="cls", image=pb.Image(encoded=b"first", crop=pb.Crop(width=2, height=2)))
    second = pb.ClassifyRequest(image=pb.Image(encoded=b"second"))
    with grpc.insecure_channel(f"unix:{sock}") as channel:
        call = channel.unary_unary("/edgetpud.v1.Inference/Classify", request_serializer=None,
                                   response_deserializer=pb.ClassifyResponse.FromString)
        call(first.SerializeToString() + second.SerializeToString(), timeout=10)
    image = fake.requests[-1][2].image
    assert bytes(image.data) == b"second" and image.crop == (0, 0, 2, 2)

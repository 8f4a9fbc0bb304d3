"""Frames in shared memory through the native API and the client library: the same answers as frames sent
in the message, slots never overwritten while in flight, and every bad span refused with the daemon serving on."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from daemon_fixture import real_daemon_fixture
from edgetpud.daemon.client import ClientError, Frame, SharedFrame

pytestmark = pytest.mark.slow  # starts the daemon

MODEL = "mobilenet_v1_0.25_128_quant"
EMBEDDER = "embedding_extractor"  # a model that learns classes
WIDTH, HEIGHT = 320, 240

daemon = real_daemon_fixture("shared_frames", [MODEL, EMBEDDER])


def frame_of(seed: int) -> np.ndarray:
    """A deterministic frame with structure (a gradient plus noise), so classes differ between seeds."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([(x * (seed + 1)) % 256, (y * 3 + seed * 40) % 256, (x + y) % 256], axis=-1)
    return ((base + rng.integers(0, 40, base.shape)) % 256).astype(np.uint8)


def same_classes(a, b) -> None:
    assert [(c.id, round(c.score, 6)) for c in a.classes] == [(c.id, round(c.score, 6)) for c in b.classes]


def test_a_shared_frame_classifies_exactly_as_the_same_frame_sent_in_the_message(client) -> None:
    with client.shared_frames(WIDTH, HEIGHT, slots=2) as ring:
        for seed in (1, 2, 3):
            image = frame_of(seed)
            shared = ring.put(image)
            assert isinstance(shared, SharedFrame) and shared.byte_size == image.nbytes
            same_classes(client.classify(MODEL, shared, top_k=3), client.classify(MODEL, image, top_k=3))
        view, shared = ring.acquire()  # written in place, as a capture library would
        view[...] = frame_of(4)
        same_classes(client.classify(MODEL, shared, top_k=5), client.classify(MODEL, frame_of(4), top_k=5))


def test_a_stream_of_shared_frames_reuses_slots_only_after_their_answers(client) -> None:
    images = [frame_of(seed) for seed in range(12)]
    expected = [client.classify(MODEL, image, top_k=1) for image in images]
    with client.shared_frames(WIDTH, HEIGHT, slots=3) as ring:
        # 12 frames through 3 slots with up to 2 in flight: put() waits for a slot whose answer was read
        frames = (ring.put(image, timeout=30) for image in images)
        results = list(client.stream(MODEL, frames, max_in_flight=2, top_k=1))
    assert [r.status for r in results] == ["ok"] * 12
    for got, want in zip(results, expected):
        same_classes(got.result, want)


def test_bad_shared_spans_are_refused_and_the_daemon_serves_on(client, tmp_path: Path) -> None:
    good = frame_of(7)
    with client.shared_frames(WIDTH, HEIGHT, slots=2) as ring:
        shared = ring.put(good)  # held for the truncation at the end; the other slot serves the checks
        cases = [
            (SharedFrame("no-such-region", 0, good.nbytes, WIDTH, HEIGHT), "NOT_FOUND", "no-such-region"),
            (SharedFrame(ring.name, good.nbytes + 1, good.nbytes, WIDTH, HEIGHT), "INVALID_ARGUMENT", "region"),  # past its end
            (SharedFrame(ring.name, 0, good.nbytes - 3, WIDTH, HEIGHT), "INVALID_ARGUMENT", ""),
            (SharedFrame(ring.name, 0, good.nbytes, WIDTH, HEIGHT, pixel_format="RGBA"), "INVALID_ARGUMENT", ""),
            (SharedFrame("", 0, good.nbytes, WIDTH, HEIGHT), "INVALID_ARGUMENT", "names no region"),
        ]
        for frame, code, words in cases:
            with pytest.raises(ClientError) as info:
                client.classify(MODEL, frame)
            assert info.value.code_name == code, (frame, info.value)
            assert words in str(info.value)
            same_classes(client.classify(MODEL, ring.put(good, timeout=10)), client.classify(MODEL, good))
        # the object shrinks under the daemon (another process truncates it): a clean error, not a crash
        os.truncate(f"/dev/shm/{ring.name}", 100)
        with pytest.raises(ClientError) as info:
            client.classify(MODEL, shared)
        assert info.value.code_name in ("INVALID_ARGUMENT", "NOT_FOUND"), info.value
        assert client.classify(MODEL, good).classes


def test_a_frame_with_both_data_and_a_shared_span_is_refused(client, daemon) -> None:
    import grpc

    from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb
    from edgetpud.protos.edgetpud.v1 import edgetpud_pb2_grpc as pb_grpc

    with grpc.insecure_channel(daemon.address) as channel:
        stub = pb_grpc.InferenceStub(channel)
        frame = pb.RawFrame(data=frame_of(1).tobytes(), width=WIDTH, height=HEIGHT,
                            shared=pb.SharedSpan(region="r", offset=0, byte_size=WIDTH * HEIGHT * 3))
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(pb.ClassifyRequest(model=MODEL, image=pb.Image(frame=frame)), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "both data and a shared span" in info.value.details()
    assert client.classify(MODEL, Frame(frame_of(1).tobytes(), WIDTH, HEIGHT)).classes


def test_a_ring_is_private_to_its_user_and_gone_when_closed(client) -> None:
    ring = client.shared_frames(WIDTH, HEIGHT, slots=2)
    path = Path("/dev/shm") / ring.name
    assert path.stat().st_mode & 0o777 == 0o600
    ring.close()
    assert not path.exists()
    with pytest.raises(ClientError) as info:  # unregistered too
        client.classify(MODEL, SharedFrame(ring.name, 0, WIDTH * HEIGHT * 3, WIDTH, HEIGHT))
    assert info.value.code_name == "NOT_FOUND"
    with pytest.raises(ValueError):
        ring.put(frame_of(1))
    with client.shared_frames(WIDTH, HEIGHT) as other, pytest.raises(ValueError, match="uint8"):
        other.put(np.zeros((2, 2, 3), np.uint8))


def test_every_slot_in_use_is_a_timeout_not_an_overwrite(client) -> None:
    with client.shared_frames(WIDTH, HEIGHT, slots=1) as ring:
        ring.put(frame_of(1))  # never sent, never answered: its slot stays taken
        with pytest.raises(TimeoutError, match="1 shared frame slots"):
            ring.put(frame_of(2), timeout=0.05)


def test_a_failed_call_frees_its_slot_too(client) -> None:
    with client.shared_frames(WIDTH, HEIGHT, slots=1) as ring:
        with pytest.raises(ClientError) as info:
            client.classify("no-such-model", ring.put(frame_of(1)))
        assert info.value.code_name == "NOT_FOUND"
        assert client.classify(MODEL, ring.put(frame_of(1), timeout=0.5)).classes  # the slot was given back


def photo(test_data: Path, name: str, flip: bool = False) -> np.ndarray:
    from PIL import Image
    image = Image.open(test_data / name).convert("RGB").resize((WIDTH, HEIGHT))
    return np.asarray(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image)


def test_samples_sent_as_shared_frames_teach_a_class_and_free_their_slots(client, test_data: Path) -> None:
    labels = {name: [photo(test_data, f"{name}.jpg"), photo(test_data, f"{name}.jpg", flip=True)]
              for name in ("parrot", "owl")}
    with client.shared_frames(WIDTH, HEIGHT, slots=2) as ring:
        for label, images in labels.items():
            added = client.add_samples(EMBEDDER, label, [ring.put(image, timeout=0.5) for image in images])
            assert added.added == 2
        for label, images in labels.items():
            for image in images:
                assert client.classify(EMBEDDER, ring.put(image, timeout=0.5), top_k=1).classes[0].label == label
    for label in labels:
        client.remove_class(EMBEDDER, label)


@pytest.mark.parametrize("name, key, offset, byte_size", [
    ("frames", "/frames", 0, 2764800), ("é-région", "/x", 300, 1), ("", "", 0, 0), ("r", "/r", 2 ** 40, 2 ** 63 - 1)])
def test_the_registry_requests_are_the_kserve_messages_byte_for_byte(name, key, offset, byte_size) -> None:
    from edgetpud.daemon.client import _registry_wire as wire
    from edgetpud.protos.kserve import grpc_predict_v2_pb2 as kserve

    assert wire.register_request(name, key, offset, byte_size) == kserve.SystemSharedMemoryRegisterRequest(
        name=name, key=key, offset=offset, byte_size=byte_size).SerializeToString()
    assert wire.unregister_request(name) == kserve.SystemSharedMemoryUnregisterRequest(name=name).SerializeToString()


def test_shared_frames_work_beside_tritonclient_in_one_process(daemon) -> None:
    import importlib.util
    if importlib.util.find_spec("tritonclient") is None:  # found, not imported: it cannot share this process
        pytest.skip("tritonclient needs Python 3.10 or later")
    script = f"""
import numpy as np, tritonclient.grpc  # its protos and edgetpud's KServe stubs cannot share a process
from edgetpud.client import Client
with Client({daemon.address!r}) as client, client.shared_frames({WIDTH}, {HEIGHT}, slots=1) as ring:
    print(len(client.classify({MODEL!r}, ring.put(np.zeros(({HEIGHT}, {WIDTH}, 3), np.uint8)), top_k=2).classes))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"


def test_a_stream_closed_while_its_sender_waits_for_a_slot_frees_every_slot(client) -> None:
    image = frame_of(3)
    with client.shared_frames(WIDTH, HEIGHT, slots=2) as ring:
        results = client.stream(MODEL, (ring.put(image, timeout=10) for _ in range(10)), max_in_flight=2)
        assert next(results).ok
        results.close()  # the sending thread may be inside put(), waiting for a slot
        held = [ring.put(image, timeout=10), ring.put(image, timeout=10)]  # both slots come back
        assert all(isinstance(frame, SharedFrame) for frame in held)


def test_every_call_taking_a_shared_frame_frees_its_slot_whatever_the_answer(client) -> None:
    with client.shared_frames(WIDTH, HEIGHT, slots=1) as ring:
        results = list(client.stream(MODEL, [ring.put(frame_of(1), timeout=0.5)], task="raw"))
        assert len(results) == 1
        try:
            client.invoke(MODEL, image=ring.put(frame_of(1), timeout=0.5))
        except ClientError as exc:
            assert exc.code_name == "INVALID_ARGUMENT"
        unsendable = dataclasses.replace(ring.put(frame_of(1), timeout=0.5), pixel_format="YUV")
        with pytest.raises(ValueError, match="unknown pixel format"):  # a frame that fails to encode is freed too
            list(client.stream(MODEL, [unsendable]))
        assert ring.put(frame_of(2), timeout=0.5)


def test_a_shared_frame_goes_with_one_call(client) -> None:
    with client.shared_frames(WIDTH, HEIGHT, slots=1) as ring:
        frame = ring.put(frame_of(1))
        client.classify(MODEL, frame)
        assert frame.answered
        ring.put(frame_of(2)).release()  # the slot now holds another frame
        with pytest.raises(ValueError, match="answered already"):
            client.classify(MODEL, frame)


def test_a_span_that_is_not_the_frame_is_refused_before_it_is_read(client) -> None:
    with client.shared_frames(WIDTH, HEIGHT, slots=1) as ring:
        with pytest.raises(ClientError) as info:  # a 1x1 frame naming the whole slot
            client.classify(MODEL, SharedFrame(ring.name, 0, ring.slot_bytes, 1, 1))
        assert info.value.code_name == "INVALID_ARGUMENT" and "needs 3: set byte_size" in str(info.value)
        with pytest.raises(ClientError) as info:
            client.classify(MODEL, SharedFrame(ring.name, 0, 3 * 10000 * 5000, 10000, 5000))
        assert info.value.code_name == "INVALID_ARGUMENT" and "more than the limit" in str(info.value)
        assert client.classify(MODEL, ring.put(frame_of(1))).classes


def test_more_shared_samples_than_slots_in_one_call_is_a_clear_timeout(client, test_data: Path) -> None:
    image = photo(test_data, "parrot.jpg")
    with client.shared_frames(WIDTH, HEIGHT, slots=1) as ring:
        with pytest.raises(TimeoutError, match="add_samples call ends"):
            client.add_samples(EMBEDDER, "never", (ring.put(image, timeout=0.3) for _ in range(2)))
        assert "never" not in [c.label for c in client.classes(EMBEDDER).classes]
        assert ring.put(image, timeout=5)  # the call's slot was freed when it ended


def test_a_forgotten_ring_is_unregistered_and_removed(client) -> None:
    import gc
    ring = client.shared_frames(WIDTH, HEIGHT, slots=1)
    name = ring.name
    del ring
    gc.collect()
    assert not (Path("/dev/shm") / name).exists()
    with pytest.raises(ClientError) as info:
        client.classify(MODEL, SharedFrame(name, 0, WIDTH * HEIGHT * 3, WIDTH, HEIGHT))
    assert info.value.code_name == "NOT_FOUND"


def test_a_region_whose_object_was_removed_is_unregistered(client, tmp_path: Path) -> None:
    name = f"edgetpud-test-removed-{os.getpid()}"
    path = Path("/dev/shm") / name
    path.write_bytes(frame_of(1).tobytes())
    client.register_shared_memory(name, "/" + name, WIDTH * HEIGHT * 3)
    path.unlink()
    with pytest.raises(ClientError) as info:
        client.classify(MODEL, SharedFrame(name, 0, WIDTH * HEIGHT * 3, WIDTH, HEIGHT))
    assert info.value.code_name == "NOT_FOUND" and "the region is unregistered" in str(info.value)
    path.write_bytes(frame_of(1).tobytes())  # the name is free again: no ALREADY_EXISTS
    try:
        client.register_shared_memory(name, "/" + name, WIDTH * HEIGHT * 3)
        assert client.classify(MODEL, SharedFrame(name, 0, WIDTH * HEIGHT * 3, WIDTH, HEIGHT)).classes
    finally:
        client.unregister_shared_memory(name)
        path.unlink()


def test_a_shared_frame_still_in_flight_cannot_be_sent_again(client) -> None:
    with client.shared_frames(WIDTH, HEIGHT, slots=1) as ring:
        frame = ring.put(frame_of(1))
        with pytest.raises(ValueError, match="being sent already"):
            list(client.stream(MODEL, [frame, frame], max_in_flight=2))
        assert ring.put(frame_of(2), timeout=5)  # the one copy sent was answered: its slot is free


def test_closing_the_client_closes_its_rings(daemon) -> None:
    from edgetpud.daemon.client import Client

    with Client(daemon.address) as other:
        ring = other.shared_frames(WIDTH, HEIGHT, slots=1)
        name = ring.name
    assert not (Path("/dev/shm") / name).exists()
    with Client(daemon.address) as probe, pytest.raises(ClientError) as info:
        probe.classify(MODEL, SharedFrame(name, 0, WIDTH * HEIGHT * 3, WIDTH, HEIGHT))
    assert info.value.code_name == "NOT_FOUND" and "is registered" in str(info.value)


def test_a_stream_never_read_frees_its_slots_when_closed(client) -> None:
    with client.shared_frames(WIDTH, HEIGHT, slots=2) as ring:
        results = client.stream(MODEL, (ring.put(frame_of(seed), timeout=5) for seed in (1, 2)))
        time.sleep(0.5)  # both frames sent, their answers never read
        results.close()
        assert ring.put(frame_of(3), timeout=5) and ring.put(frame_of(4), timeout=5)


def test_a_removed_regions_name_can_be_registered_again(client) -> None:
    name = f"edgetpud-test-reused-{os.getpid()}"
    path = Path("/dev/shm") / name
    path.write_bytes(frame_of(1).tobytes())
    client.register_shared_memory(name, "/" + name, WIDTH * HEIGHT * 3)
    path.unlink()
    path.write_bytes(frame_of(2).tobytes())  # a restarted app makes its object and name again
    try:
        client.register_shared_memory(name, "/" + name, WIDTH * HEIGHT * 3)
        same_classes(client.classify(MODEL, SharedFrame(name, 0, WIDTH * HEIGHT * 3, WIDTH, HEIGHT)),
                     client.classify(MODEL, frame_of(2)))
    finally:
        client.unregister_shared_memory(name)
        path.unlink()


@pytest.mark.parametrize("offset, byte_size", [(0, 2 ** 64), (2 ** 64, 1), (-1, 1)])
def test_registry_numbers_outside_uint64_are_refused(offset, byte_size) -> None:
    from edgetpud.daemon.client import _registry_wire as wire

    with pytest.raises(ValueError, match="2\\*\\*64"):
        wire.register_request("r", "/r", offset, byte_size)

"""edgetpud.client (the name camera apps import) against the real daemon: inputs it accepts, values it returns, errors it raises."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from daemon_fixture import real_daemon_fixture
from edgetpud.client import (ClassifyResult, Client, ClientError, EmbedResult, Frame, default_address,
                             normalize_address)
from edgetpud.daemon.model import load_model

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

SMALL = "mobilenet_v1_0.25_128_quant"
EMBED = "embedding_extractor"


daemon = real_daemon_fixture("client", [SMALL, EMBED])


def test_the_public_name_is_the_same_library():
    import edgetpud.client
    import edgetpud.daemon.client

    assert edgetpud.client.Client is edgetpud.daemon.client.Client
    assert edgetpud.client.ClientError is edgetpud.daemon.client.ClientError
    assert set(edgetpud.client.__all__) == set(edgetpud.daemon.client.__all__)


def test_addresses(monkeypatch):
    monkeypatch.delenv("EDGETPUD_ADDRESS", raising=False)
    assert default_address() == "unix:/run/edgetpud/edgetpud.sock"
    monkeypatch.setenv("EDGETPUD_ADDRESS", "unix:/tmp/other.sock")
    assert default_address() == "unix:/tmp/other.sock"
    assert normalize_address("/run/x.sock") == "unix:/run/x.sock"
    assert normalize_address("localhost:50051") == "localhost:50051"


def test_image_inputs_path_bytes_array_and_frame_agree(client, test_data):
    path = test_data / "cat.bmp"
    rgb = np.asarray(Image.open(path).convert("RGB"))
    answers = [client.classify(SMALL, value, top_k=3) for value in
               (path, str(path), path.read_bytes(), rgb,
                Frame(np.ascontiguousarray(rgb[..., ::-1]).tobytes(), rgb.shape[1], rgb.shape[0], pixel_format="BGR"))]
    assert all(isinstance(a, ClassifyResult) for a in answers)
    assert len({tuple(c.id for c in a.classes) for a in answers}) == 1


def test_results_match_the_in_process_library(client, test_data):
    local = load_model(str(test_data / f"{SMALL}.tflite"), labels=str(test_data / "imagenet_labels.txt"))
    try:
        expected = local.classify(str(test_data / "cat.bmp"), top_k=3)
    finally:
        local.close()
    remote = client.classify(SMALL, test_data / "cat.bmp", top_k=3).classes
    assert [(c.id, c.label) for c in remote] == [(c.id, c.label) for c in expected]
    assert [c.score for c in remote] == pytest.approx([c.score for c in expected])


def test_crop_changes_what_the_model_sees(client, test_data):
    whole = client.classify(SMALL, test_data / "cat.bmp", top_k=1).classes
    corner = client.classify(SMALL, test_data / "cat.bmp", top_k=1, crop=(0, 0, 40, 40)).classes
    assert whole[0].id != corner[0].id or whole[0].score != corner[0].score


def test_embed_returns_the_vector(client, test_data):
    result = client.embed(EMBED, test_data / "cat.bmp")
    assert isinstance(result, EmbedResult) and result.embedding.size == 1024
    normalized = client.embed(EMBED, test_data / "cat.bmp", normalize=True).embedding
    assert np.linalg.norm(normalized.ravel()) == pytest.approx(1.0, rel=1e-3)


def test_invoke_by_name_and_by_position(client, test_data):
    info = client.model_info(SMALL)
    data = np.asarray(Image.open(test_data / "cat.bmp").convert("RGB").resize(info.inputs[0].shape[2:0:-1]))[None]
    assert data.shape == tuple(info.inputs[0].shape)
    by_name = client.invoke(SMALL, {info.inputs[0].name: data}).outputs
    by_position = client.invoke(SMALL, [data]).outputs
    assert list(by_name) == list(by_position) == [o.name for o in info.outputs]
    with load_model(str(test_data / f"{SMALL}.tflite")) as local:  # the mock device runs this very twin
        expected = local.invoke_raw({info.inputs[0].name: data})
    for output in info.outputs:
        for got in (by_name[output.name], by_position[output.name]):
            assert got.shape == tuple(output.shape) and got.dtype == np.dtype(output.dtype)
            np.testing.assert_array_equal(got, expected[output.name])
    assert by_name[info.outputs[0].name].argmax() == 283  # a cat ("tiger cat"), not an all-zero answer


def test_errors_carry_code_and_message(client):
    with pytest.raises(ClientError) as info:
        client.classify("nope", b"x")
    assert info.value.code_name == "NOT_FOUND" and "nope" in info.value.message
    with pytest.raises(ValueError, match="uint8"):
        client.classify(SMALL, np.zeros((4, 4, 3), np.float32))


def test_wait_ready_and_unreachable_daemon(client, tmp_path):
    assert client.wait_ready(timeout=30).ready
    with Client(f"unix:{tmp_path / 'absent.sock'}", timeout=2) as absent:
        with pytest.raises(ClientError) as info:
            absent.status()
        assert info.value.code_name == "UNAVAILABLE"


def test_stream_of_arrays(client, test_data):
    rgb = np.asarray(Image.open(test_data / "cat.bmp").convert("RGB"))
    results = list(client.stream(SMALL, [rgb] * 3, top_k=1))
    assert [r.frame_id for r in results] == [1, 2, 3] and all(r.ok for r in results)
    assert len({r.result.classes[0].id for r in results}) == 1


def _frames_then(frames: list, failure: BaseException):
    """Yield ``frames``, then raise ``failure``, as a camera that goes away mid-stream does."""
    yield from frames
    raise failure


@pytest.mark.timeout(60)
@pytest.mark.parametrize("latest_frame_wins", [False, True])
def test_stream_reraises_the_frames_own_exception_after_the_answers_owed(client, test_data, caplog,
                                                                         latest_frame_wins):
    failure = RuntimeError("camera unplugged")
    frames = _frames_then([(test_data / "cat.bmp").read_bytes()] * 5, failure)
    results = []
    with pytest.raises(RuntimeError) as info:
        for result in client.stream(SMALL, frames, top_k=1, latest_frame_wins=latest_frame_wins):
            results.append(result)
    assert info.value is failure  # the very object: same type, message, cause and traceback
    assert "_frames_then" in [entry.name for entry in info.traceback]
    assert [r.frame_id for r in results] == [1, 2, 3, 4, 5]
    assert all(r.status in ("ok", "dropped") for r in results) and results[-1].ok
    if not latest_frame_wins:
        assert all(r.ok for r in results)
    assert not [r for r in caplog.records if "Exception iterating requests" in r.getMessage()]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad, error", [("missing.bmp", FileNotFoundError),
                                        (np.zeros((4, 4, 3), np.float32), ValueError)])
def test_stream_frame_that_cannot_be_sent_raises_what_classify_raises(client, test_data, tmp_path, bad, error):
    bad = tmp_path / bad if isinstance(bad, str) else bad
    with pytest.raises(error):
        client.classify(SMALL, bad)
    cat = test_data / "cat.bmp"
    results = []
    with pytest.raises(error):
        for result in client.stream(SMALL, [cat, (7, cat.read_bytes()), bad, cat], top_k=1):
            results.append(result)
    assert [(r.frame_id, r.ok) for r in results] == [(1, True), (7, True)]


@pytest.mark.timeout(60)
def test_stream_daemon_error_stays_a_client_error_when_a_frame_failed_too(client, tmp_path):
    with pytest.raises(ClientError) as info:
        list(client.stream("nope", [tmp_path / "missing.bmp"]))
    assert info.value.code_name == "NOT_FOUND" and "nope" in info.value.message
    assert info.value.__cause__ is None or isinstance(info.value.__cause__, FileNotFoundError)


@pytest.mark.timeout(120)
def test_daemon_serves_on_after_streams_whose_frames_failed(client, test_data):
    cat = (test_data / "cat.bmp").read_bytes()
    for _ in range(70):  # more than max_concurrent_requests (64): a stream left open would exhaust it
        with pytest.raises(KeyError):
            list(client.stream(SMALL, _frames_then([cat], KeyError("frame")), top_k=1))
    assert [r.ok for r in client.stream(SMALL, [cat] * 3, top_k=1)] == [True] * 3
    assert client.classify(SMALL, cat, top_k=1).classes
    assert client.status().ready

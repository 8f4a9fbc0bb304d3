"""Upload streams that go wrong: too large, out of order, cut short, a name refused before any data.

The Models servicer runs in process on the fake service, so the limit can be made small and the
test can see that nothing reached the service.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import grpc
import pytest

from daemon_fixture import FakeService, InProcessServer
from edgetpud.daemon.api import management
from edgetpud.daemon.config import Config
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2_grpc as pb_grpc

Code = grpc.StatusCode


@pytest.fixture(scope="module")
def served(tmp_path_factory: Any) -> Iterator[Tuple[FakeService, str]]:
    sock = tmp_path_factory.mktemp("upload") / "edgetpud.sock"
    service = FakeService()
    server = InProcessServer(service, Config(listen=[f"unix:{sock}"])).start()
    yield service, f"unix:{sock}"
    server.stop()


@pytest.fixture
def models(served: Tuple[FakeService, str]) -> Iterator[pb_grpc.ModelsStub]:
    service, address = served
    service.loads.clear()
    with grpc.insecure_channel(address) as channel:
        yield pb_grpc.ModelsStub(channel)


def upload(models: pb_grpc.ModelsStub, chunks: List[pb.UploadModelChunk]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        models.Upload(iter(chunks), timeout=10)
    return caught.value


def test_upload_over_the_limit_is_resource_exhausted(served: Tuple[FakeService, str], models: pb_grpc.ModelsStub,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # It was INVALID_ARGUMENT, as if the bytes were malformed; the limit is the daemon's, as for a large message.
    monkeypatch.setattr(management, "MAX_UPLOAD_BYTES", 1000)
    error = upload(models, [pb.UploadModelChunk(name="big")] + [pb.UploadModelChunk(data=b"x" * 600)] * 3)
    assert error.code() == Code.RESOURCE_EXHAUSTED
    assert "larger than the 1000 bytes" in error.details() and "load it from its path" in error.details()
    assert served[0].loads == []
    exact = models.Upload(iter([pb.UploadModelChunk(name="fits"), pb.UploadModelChunk(data=b"x" * 1000)]), timeout=10)
    assert exact.name == "fits" and served[0].loads[-1] == ("fits", None, b"x" * 1000)


def test_a_bad_name_is_refused_before_the_data_arrive(served: Tuple[FakeService, str],
                                                      models: pb_grpc.ModelsStub) -> None:
    # The name was checked only after the whole model had been received: a client with a bad name
    # sent hundreds of MB for nothing. Here the data never come, so only an early answer ends the call.
    release = threading.Event()

    def chunks() -> Iterator[pb.UploadModelChunk]:
        yield pb.UploadModelChunk(name="../etc/evil")
        release.wait(30)
        yield pb.UploadModelChunk(data=b"never sent")
    try:
        with pytest.raises(grpc.RpcError) as caught:
            models.Upload(chunks(), timeout=10)
    finally:
        release.set()
    assert caught.value.code() == Code.INVALID_ARGUMENT, caught.value.details()
    assert "invalid model name '../etc/evil'" in caught.value.details()
    assert served[0].loads == []


ORDER = "one chunk with the model name, optionally one with its labels, then its data chunks"


@pytest.mark.parametrize("chunks, fragment", [
    ([pb.UploadModelChunk(data=b"TFL3"), pb.UploadModelChunk(name="late")], ORDER),
    ([pb.UploadModelChunk(name="a"), pb.UploadModelChunk(name="b")], ORDER),
    ([pb.UploadModelChunk(name="a"), pb.UploadModelChunk(data=b"x"), pb.UploadModelChunk(name="a")],
     ORDER),
    ([pb.UploadModelChunk(name="a"), pb.UploadModelChunk(data=b"x"), pb.UploadModelChunk(labels=b"0 a")], ORDER),
    ([pb.UploadModelChunk(name="a"), pb.UploadModelChunk(labels=b"0 a"), pb.UploadModelChunk(labels=b"0 a")],
     ORDER),
    ([pb.UploadModelChunk(labels=b"0 a"), pb.UploadModelChunk(name="a")], ORDER),
    ([pb.UploadModelChunk(name="cut_short")], "at least one data chunk"),
    ([], "needs a model name"),
], ids=["data-first", "two-names", "name-after-data", "labels-after-data", "two-labels", "labels-first", "no-data",
        "nothing"])
def test_malformed_upload_streams_are_invalid_argument(served: Tuple[FakeService, str], models: pb_grpc.ModelsStub,
                                                       chunks: List[pb.UploadModelChunk], fragment: str) -> None:
    error = upload(models, chunks)
    assert error.code() == Code.INVALID_ARGUMENT
    assert fragment in error.details()
    assert served[0].loads == []
    assert models.List(pb.ListModelsRequest(), timeout=10) is not None


def test_labels_sent_with_a_load_or_an_upload_reach_the_service(served: Tuple[FakeService, str],
                                                                 models: pb_grpc.ModelsStub) -> None:
    models.Upload(iter([pb.UploadModelChunk(name="up"), pb.UploadModelChunk(labels=b"0 cat\n"),
                        pb.UploadModelChunk(data=b"x")]), timeout=10)
    models.Load(pb.LoadModelRequest(name="cls", path="/models/cls", labels=b""), timeout=10)
    models.Load(pb.LoadModelRequest(name="cls", path="/models/cls"), timeout=10)
    # an empty labels file is a file with no labels, not "none given"
    assert served[0].load_labels[-3:] == [b"0 cat\n", b"", None]

"""The client's Learning calls against a scripted in-process servicer: what goes on the wire, what comes back.

The servicer here only plays the protocol (it records requests and answers from a
script), so these tests pin the client's side of the contract (message order, label
changes, cancellation, size checks, NaN handling) without a daemon; the same calls
through the real daemon are in test_learn_cli.py.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent import futures
from typing import Any, Dict, List

import grpc
import numpy as np
import pytest

from edgetpud.client import (AddedSamples, Client, ClientError, ExportResult, HeadVersion, LearnedClass, LearnedModel,
                             TrainProgress)
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2_grpc as pb_grpc

from daemon_fixture import wait_for

EXPORTED = bytes(range(256)) * 40  # 10240 bytes, sent in 3000-byte chunks


def learned(model: str, counts: Dict[str, int], head_version: int = 1, method: str = "imprinting") -> pb.LearnedModel:
    return pb.LearnedModel(model=model, version=f"h{head_version}", head_version=head_version, method=method,
                           classes=[pb.LearnedClass(id=i, label=label, samples=n, source="imprinted")
                                    for i, (label, n) in enumerate(sorted(counts.items()))])


class ScriptedLearning(pb_grpc.LearningServicer):
    """Records every call; ``outcomes`` says how each AddSamples stream ended ("completed" or "cancelled")."""

    def __init__(self) -> None:
        self.add_calls: List[List[pb.AddSamplesRequest]] = []
        self.outcomes: List[str] = []
        self.train_requests: List[pb.TrainRequest] = []
        self.train_cancelled = threading.Event()
        self.export_size_lie = 0  # bytes the header claims beyond what is sent

    def AddSamples(self, request_iterator: Any, context: grpc.ServicerContext) -> pb.AddSamplesResponse:
        messages: List[pb.AddSamplesRequest] = []
        self.add_calls.append(messages)
        try:
            for message in request_iterator:
                messages.append(message)
        except Exception:  # noqa: BLE001 - the client went away mid-stream
            self.outcomes.append("cancelled")
            raise
        if messages and messages[0].model == "watch":
            # A client cancel can end the iteration just like a half-close (a race in grpc's server):
            # after a cancel the call turns inactive at once, after a half-close it stays active.
            deadline = time.monotonic() + 2.0
            while context.is_active() and time.monotonic() < deadline:
                time.sleep(0.01)
        if not context.is_active():
            self.outcomes.append("cancelled")
            return pb.AddSamplesResponse()
        self.outcomes.append("completed")
        first = messages[0]
        if first.model == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "model 'missing' is not loaded")
        counts: Dict[str, int] = {}
        label = first.label
        for message in messages[1:]:
            label = message.label or label
            counts[label] = counts.get(label, 0) + 1
        return pb.AddSamplesResponse(model=learned(first.model, counts), added=len(messages) - 1)

    def ListClasses(self, request: pb.ListClassesRequest, context: grpc.ServicerContext) -> pb.ListClassesResponse:
        return pb.ListClassesResponse(model=learned(request.model, {"cat": 3, "dog": 2}, head_version=4))

    def RemoveClass(self, request: pb.RemoveClassRequest, context: grpc.ServicerContext) -> pb.RemoveClassResponse:
        if request.label != "cat":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no class {request.label!r}")
        return pb.RemoveClassResponse(model=learned(request.model, {"dog": 2}, head_version=5))

    def Train(self, request: pb.TrainRequest, context: grpc.ServicerContext) -> Any:
        self.train_requests.append(request)
        epochs = request.epochs or 3
        if request.model == "slow":
            # registered first: a cancel may land while the first message is still being sent,
            # and then the server never resumes this generator
            context.add_callback(self.train_cancelled.set)
            yield pb.TrainProgress(epoch=1, epochs=epochs, loss=1.0, train_accuracy=0.5,
                                   validation_accuracy=math.nan)
            self.train_cancelled.wait(10)
            return
        for epoch in range(1, epochs + 1):
            progress = pb.TrainProgress(epoch=epoch, epochs=epochs, loss=1.0 / epoch, train_accuracy=epoch / epochs,
                                        validation_accuracy=math.nan if request.validation_fraction == 0 else 0.75)
            if epoch == epochs and request.model != "separate":
                progress.model.CopyFrom(learned(request.model, {"cat": 3, "dog": 2}, head_version=6,
                                                method="backprop"))
            yield progress
        if request.model == "separate":  # the head in a message of its own, after the last epoch
            yield pb.TrainProgress(model=learned(request.model, {"cat": 3}, head_version=6, method="backprop"))

    def Export(self, request: pb.ExportRequest, context: grpc.ServicerContext) -> Any:
        if request.target == "edgetpu":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no compiled twin")
        yield pb.ExportChunk(header=pb.ExportHeader(model=request.model, head_version=6, target=request.target,
                                                    size=len(EXPORTED) + self.export_size_lie,
                                                    labels="cat\ndog\n"))
        for start in range(0, len(EXPORTED), 3000):
            yield pb.ExportChunk(data=EXPORTED[start:start + 3000])

    def ListHeads(self, request: pb.ListHeadsRequest, context: grpc.ServicerContext) -> pb.ListHeadsResponse:
        return pb.ListHeadsResponse(model=request.model, heads=[
            pb.HeadVersion(head_version=1, method="imprinting", created=100.5, labels=["cat"]),
            pb.HeadVersion(head_version=2, method="backprop", created=200.0, labels=["cat", "dog"], current=True)])

    def RestoreHead(self, request: pb.RestoreHeadRequest, context: grpc.ServicerContext) -> pb.LearnedModel:
        if request.head_version != 1:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no head version {request.head_version}")
        return learned(request.model, {"cat": 1}, head_version=7)


@pytest.fixture
def served(tmp_path):
    servicer = ScriptedLearning()
    pool = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(pool)
    pb_grpc.add_LearningServicer_to_server(servicer, server)
    address = f"unix:{tmp_path / 'learn.sock'}"
    server.add_insecure_port(address)
    server.start()
    client = Client(address, timeout=10)
    yield client, servicer
    client.close()
    server.stop(None).wait()
    pool.shutdown(wait=True)


def test_add_samples_sends_the_header_then_one_message_per_sample(served):
    client, servicer = served
    vector = np.linspace(0, 1, 8, dtype=np.float32).reshape(1, 1, 1, 8)
    result = client.add_samples("emb", "cat", images=[b"jpeg-1", b"jpeg-2"], embeddings=[vector],
                                keep_classes=True)
    [messages] = servicer.add_calls
    first = messages[0]
    assert (first.model, first.label, first.keep_classes, first.WhichOneof("sample")) == ("emb", "cat", True, None)
    assert [m.WhichOneof("sample") for m in messages[1:]] == ["image", "image", "embedding"]
    assert messages[1].image.encoded == b"jpeg-1" and not messages[1].label
    assert list(messages[3].embedding.values) == pytest.approx(vector.ravel().tolist())
    assert isinstance(result, AddedSamples) and isinstance(result, LearnedModel)
    assert result.added == 3 and result.classes == [LearnedClass(0, "cat", 3, "imprinted")]


def test_labeled_images_change_the_label_only_where_it_changes(served):
    client, servicer = served
    result = client.add_labeled_images("emb", [("cat", b"a"), ("cat", b"b"), ("dog", b"c")])
    [messages] = servicer.add_calls
    assert messages[0].label == "cat"
    assert [m.label for m in messages[1:]] == ["", "", "dog"]
    assert {c.label: c.samples for c in result.classes} == {"cat": 2, "dog": 1}
    with pytest.raises(ValueError, match="no samples"):
        client.add_labeled_images("emb", [])


def test_an_unreadable_image_cancels_the_call_so_nothing_is_stored(served, tmp_path):
    client, servicer = served
    client.add_samples("watch", "cat", images=[b"ok"])
    assert servicer.outcomes == ["completed"]  # the check below can tell the two apart
    servicer.outcomes.clear()
    missing = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        client.add_samples("watch", "cat", images=[b"ok", missing])
    wait_for(lambda: servicer.outcomes, what="the servicer to see the call end")
    assert servicer.outcomes == ["cancelled"]


def test_daemon_errors_are_client_errors_with_the_code(served):
    client, _ = served
    with pytest.raises(ClientError) as info:
        client.add_samples("missing", "cat", images=[b"x"])
    assert info.value.code == grpc.StatusCode.NOT_FOUND and "missing" in info.value.message
    with pytest.raises(ClientError) as info:
        client.remove_class("emb", "zebra")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_classes_and_remove_class(served):
    client, _ = served
    listed = client.classes("emb")
    assert (listed.model, listed.version, listed.head_version, listed.method) == ("emb", "h4", 4, "imprinting")
    assert [(c.label, c.samples) for c in listed.classes] == [("cat", 3), ("dog", 2)]
    assert [c.label for c in client.remove_class("emb", "cat").classes] == ["dog"]


def test_train_streams_progress_and_the_last_item_carries_the_head(served):
    client, servicer = served
    run = client.train("emb", epochs=4, learning_rate=0.1, seed=7, warm_start=True)
    items = list(run)
    assert [p.epoch for p in items] == [1, 2, 3, 4] and all(isinstance(p, TrainProgress) for p in items)
    assert all(p.validation_accuracy is None for p in items)  # NaN on the wire: no validation split
    assert [p.model is None for p in items] == [True, True, True, False]
    assert run.model == items[-1].model and run.model.method == "backprop"
    [request] = servicer.train_requests
    assert (request.epochs, request.seed, request.warm_start, request.batch_size) == (4, 7, True, 0)
    assert request.learning_rate == pytest.approx(0.1) and request.HasField("seed")


def test_a_head_sent_after_the_last_epoch_joins_that_epoch(served):
    client, _ = served
    items = list(client.train("separate", epochs=2))
    assert [(p.epoch, p.epochs) for p in items] == [(1, 2), (2, 2), (2, 2)]
    assert items[-1].loss == items[-2].loss and items[-1].model.model == "separate" and items[-2].model is None


def test_train_defaults_send_zero_and_no_seed(served):
    client, servicer = served
    items = list(client.train("emb", validation_fraction=0.2))
    assert items[-1].validation_accuracy == pytest.approx(0.75)
    [request] = servicer.train_requests
    assert request.epochs == 0 and request.l2 == 0 and not request.HasField("seed")


def test_cancelling_training_stops_the_call_on_the_daemon(served):
    client, servicer = served
    with client.train("slow") as run:
        first = next(run)
        assert first.epoch == 1
    assert servicer.train_cancelled.wait(10)
    assert list(run) == []  # iteration simply ends after a cancel


@pytest.mark.parametrize("options", [{"epochs": 0}, {"epochs": -1}, {"learning_rate": math.nan},
                                     {"learning_rate": 0.0}, {"l2": -1.0}, {"l2": math.inf},
                                     {"validation_fraction": 1.0}, {"batch_size": 0}, {"seed": -1}])
def test_train_refuses_bad_numbers_before_sending(served, options):
    client, servicer = served
    with pytest.raises(ValueError):
        client.train("emb", **options)
    assert servicer.train_requests == []


def test_export_joins_the_chunks_and_reports_progress(served):
    client, _ = served
    seen = []
    result = client.export("emb", on_progress=lambda received, total: seen.append((received, total)))
    assert isinstance(result, ExportResult)
    assert result.data == EXPORTED and result.size == len(EXPORTED)
    assert (result.model, result.head_version, result.target, result.labels) == ("emb", 6, "cpu", ["cat", "dog"])
    assert seen[0] == (0, len(EXPORTED)) and seen[-1] == (len(EXPORTED), len(EXPORTED)) and len(seen) == 5


def test_export_checks_the_size(served):
    client, servicer = served
    servicer.export_size_lie = 10
    with pytest.raises(ClientError) as info:
        client.export("emb")
    assert info.value.code == grpc.StatusCode.DATA_LOSS and "10240 of the 10250" in info.value.message
    servicer.export_size_lie = -10
    with pytest.raises(ClientError) as info:
        client.export("emb")
    assert info.value.code == grpc.StatusCode.DATA_LOSS


def test_export_without_a_compiled_twin_is_failed_precondition(served):
    client, _ = served
    with pytest.raises(ClientError) as info:
        client.export("emb", target="edgetpu")
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_heads_and_restore(served):
    client, _ = served
    heads = client.heads("emb")
    assert heads == [HeadVersion(1, "imprinting", 100.5, ["cat"], False),
                     HeadVersion(2, "backprop", 200.0, ["cat", "dog"], True)]
    assert client.restore_head("emb", 1).head_version == 7
    with pytest.raises(ClientError) as info:
        client.restore_head("emb", 9)
    assert info.value.code == grpc.StatusCode.NOT_FOUND

"""KServe v2 edges over the wire: versions, requested outputs, parameters the daemon does not offer,
repository loads. Each refusal names what to do instead, and the daemon serves the next request."""
from __future__ import annotations

import grpc
import numpy as np
import pytest

from daemon_fixture import real_daemon_fixture
from edgetpud.protos.kserve import grpc_predict_v2_pb2 as pb
from edgetpud.protos.kserve import grpc_predict_v2_pb2_grpc as pb_grpc

MODEL = "mobilenet_v1_0.25_128_quant"
SHAPE = [1, 128, 128, 3]
OUTPUT = "MobilenetV1/Predictions/Reshape_1"

daemon = real_daemon_fixture("kserve_edges", [MODEL])


@pytest.fixture(scope="module")
def stub(daemon):
    with grpc.insecure_channel(daemon.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def infer_request(version: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL, model_version=version)
    request.inputs.add(name="input", datatype="UINT8", shape=SHAPE)
    request.raw_input_contents.append(bytes(int(np.prod(SHAPE))))
    return request


def refused(call, request, code: grpc.StatusCode) -> str:
    """Call, expect ``code``, return the message."""
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    assert info.value.code() == code, info.value.details()
    return info.value.details()


def served(stub) -> None:
    """The daemon still answers a good request."""
    reply = stub.ModelInfer(infer_request(), timeout=30)
    assert [o.name for o in reply.outputs] == [OUTPUT] and len(reply.raw_output_contents[0]) == 1001


# ------------------------------------------------------------------ versions

def test_model_metadata_of_a_version_that_does_not_exist_is_not_found(stub):
    """It used to answer with the served version's metadata, as if version 7 existed."""
    live = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=30).versions[0]
    assert stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL, version=live), timeout=30).name == MODEL
    message = refused(stub.ModelMetadata, pb.ModelMetadataRequest(name=MODEL, version="7"), grpc.StatusCode.NOT_FOUND)
    assert f"model {MODEL} has no version 7" in message and f"[{live}]" in message
    message = refused(stub.ModelMetadata, pb.ModelMetadataRequest(name=MODEL, version="abc"),
                      grpc.StatusCode.NOT_FOUND)
    assert "has no version 'abc'" in message
    served(stub)


def test_model_ready_and_metadata_read_a_version_as_model_infer_does(stub):
    """ModelInfer serves version "01" as 1; ModelReady said it was not ready."""
    live = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=30).versions[0]
    padded = "0" + live
    assert stub.ModelInfer(infer_request(padded), timeout=30).model_version == live
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version=padded), timeout=30).ready
    assert stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL, version=padded), timeout=30).versions == [live]
    assert not stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version="7"), timeout=30).ready

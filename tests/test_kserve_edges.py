"""KServe v2 edges over the wire: versions, requested outputs, parameters the daemon does not offer,
repository loads. Each refusal names what to do instead, and the daemon serves the next request."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest

from daemon_fixture import real_daemon_fixture
from edgetpud.protos.kserve import grpc_predict_v2_pb2 as pb
from edgetpud.protos.kserve import grpc_predict_v2_pb2_grpc as pb_grpc
from test_kserve import needs_tritonclient

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

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


@pytest.mark.parametrize("version", ["0", "00", " 1", "1 ", "1_0", "+1", "\u0661"])
def test_a_version_that_is_not_a_plain_number_from_1_is_not_found(stub, version):
    """ "0" served the current version, and Python's int() read " 1", "1_0", "+1" and Arabic-Indic digits."""
    for call, request in ((stub.ModelInfer, infer_request(version)),
                          (stub.ModelMetadata, pb.ModelMetadataRequest(name=MODEL, version=version))):
        message = refused(call, request, grpc.StatusCode.NOT_FOUND)
        assert f"model {MODEL} has no version" in message
    assert not stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version=version), timeout=30).ready
    served(stub)


# ------------------------------------------------------------------ requested outputs and parameters

def test_an_output_requested_twice_is_invalid_argument(stub):
    """It used to come back twice, so a client indexing outputs by name saw one and paid for two."""
    request = infer_request()
    request.outputs.add(name=OUTPUT)
    request.outputs.add(name=OUTPUT)
    message = refused(stub.ModelInfer, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert f"output '{OUTPUT}' is requested twice" in message
    served(stub)


def test_classification_is_refused_instead_of_answered_with_raw_scores(stub):
    """tritonclient's class_count sets it; the raw UINT8 scores came back as if it had been honoured."""
    request = infer_request()
    request.outputs.add(name=OUTPUT).parameters["classification"].int64_param = 3
    message = refused(stub.ModelInfer, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert "classification" in message and "edgetpud.v1.Inference/Classify" in message
    served(stub)


@pytest.mark.parametrize("where", ["input", "output"])
def test_an_unregistered_shared_memory_region_is_refused_instead_of_ignored(stub, where):
    """An input must never silently be read from raw bytes, nor an output be left unwritten."""
    request = infer_request()
    target = request.inputs[0] if where == "input" else request.outputs.add(name=OUTPUT)
    target.parameters["shared_memory_region"].string_param = "camera0"
    target.parameters["shared_memory_byte_size"].int64_param = int(np.prod(SHAPE)) if where == "input" else 1001
    if where == "input":
        del request.raw_input_contents[:]
    message = refused(stub.ModelInfer, request, grpc.StatusCode.NOT_FOUND)
    assert "no shared memory region 'camera0' is registered" in message
    served(stub)


def test_binary_data_and_a_subset_of_outputs_are_served(stub):
    request = infer_request()
    out = request.outputs.add(name=OUTPUT)
    out.parameters["binary_data"].bool_param = True
    reply = stub.ModelInfer(request, timeout=30)
    assert [o.name for o in reply.outputs] == [OUTPUT] and reply.outputs[0].datatype == "UINT8"


def test_server_metadata_claims_only_what_is_served(stub):
    extensions = set(stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=30).extensions)
    assert extensions == {"model_repository", "system_shared_memory"}
    # what system_shared_memory promises is served
    assert not stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(), timeout=30).regions
    # what model_repository promises is served
    assert any(m.name == MODEL for m in stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=30).models)


# ------------------------------------------------------------------ repository

def load_request(name: str, **parameters) -> pb.RepositoryModelLoadRequest:
    request = pb.RepositoryModelLoadRequest(model_name=name)
    for key, (kind, value) in parameters.items():
        setattr(request.parameters[key.replace("__", ":")], kind, value)
    return request


@pytest.mark.parametrize("parameters, message", [
    ({"path": ("bool_param", True)}, "parameter 'path' must be a string_param"),
    ({"path": ("string_param", "")}, "parameter 'path' must be a string_param"),
    ({"config": ("string_param", '{"max_batch_size": 8}')}, "no model configuration to override"),
    ({"config": ("string_param", "not json")}, "no model configuration to override"),
    ({"weights": ("string_param", "x")}, "unknown parameter 'weights'"),
    ({"file__1/model.onnx": ("bytes_param", b"x")}, "only a .tflite file"),
    ({"file__1/model.tflite": ("bytes_param", b"")}, "is empty"),
], ids=["path-bool", "path-empty", "config", "config-not-json", "unknown", "not-tflite", "empty-file"])
def test_load_parameters_that_cannot_be_honoured_are_invalid_argument(stub, parameters, message):
    """A bool path loaded the models folder itself; a config or file content was dropped silently."""
    text = refused(stub.RepositoryModelLoad, load_request("extra", **parameters), grpc.StatusCode.INVALID_ARGUMENT)
    assert message in text
    served(stub)


def test_load_with_file_content_uploads_it(stub, test_data):
    """Triton's way to send a model: the file's bytes in a 'file:VERSION/NAME' parameter.

    It used to be ignored, and the load failed NOT_FOUND for a models_dir folder never asked for.
    """
    data = (test_data / f"{MODEL}.tflite").read_bytes()
    stub.RepositoryModelLoad(load_request("sent", config=("string_param", "{}"),
                                          **{"file__1/model.tflite": ("bytes_param", data)}), timeout=60)
    try:
        assert stub.ModelReady(pb.ModelReadyRequest(name="sent"), timeout=30).ready
        request = infer_request()
        request.model_name = "sent"
        assert len(stub.ModelInfer(request, timeout=30).raw_output_contents[0]) == 1001
    finally:
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="sent"), timeout=30)
    served(stub)


def test_two_files_are_refused(stub, test_data):
    data = (test_data / f"{MODEL}.tflite").read_bytes()
    text = refused(stub.RepositoryModelLoad,
                   load_request("two", **{"file__1/model.tflite": ("bytes_param", data),
                                          "file__1/model_edgetpu.tflite": ("bytes_param", data)}),
                   grpc.StatusCode.INVALID_ARGUMENT)
    assert "one file" in text
    served(stub)


TRITON_LOAD = """
    import json, sys
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException
    address, path = sys.argv[1], sys.argv[2]
    client = tc.InferenceServerClient(url=address)
    client.load_model("uploaded", config="{}", files={"file:1/model.tflite": open(path, "rb").read()})
    out = {"ready": client.is_model_ready("uploaded")}
    try:
        client.get_model_metadata("uploaded", model_version="9")
    except InferenceServerException as exc:
        out["v9"] = [exc.status(), exc.message()]
    client.unload_model("uploaded")
    out["after"] = client.is_model_ready("uploaded")
    print(json.dumps(out))
"""


@needs_tritonclient
def test_tritonclient_load_model_with_files(daemon, test_data):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(TRITON_LOAD), daemon.address,
                             str(test_data / f"{MODEL}.tflite")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["ready"] is True and out["after"] is False
    assert out["v9"][0] == str(grpc.StatusCode.NOT_FOUND) and "has no version 9" in out["v9"][1]


@pytest.mark.parametrize("name", ["", "../etc", "a/b"])
def test_an_invalid_model_name_to_load_is_invalid_argument(stub, name):
    """A bad name is the caller's input; it was FAILED_PRECONDITION, as if the daemon's state were at fault."""
    text = refused(stub.RepositoryModelLoad, load_request(name), grpc.StatusCode.INVALID_ARGUMENT)
    assert "invalid model name" in text
    served(stub)

"""Triton's system shared-memory extension: tritonclient end to end, and every bad region refused cleanly.

tritonclient runs in a child process (its protos clash with ours in one process); the refusals are
sent with our own stubs, each followed by a request that still succeeds.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest

from daemon_fixture import real_daemon_fixture
from edgetpud.hal.executor import TfliteExecutor
from edgetpud.protos.kserve import grpc_predict_v2_pb2 as pb
from edgetpud.protos.kserve import grpc_predict_v2_pb2_grpc as pb_grpc
from test_kserve import MODEL, needs_tritonclient

pytestmark = pytest.mark.slow  # starts the daemon

daemon = real_daemon_fixture("kserve_shm", [MODEL])

SHM_SCRIPT = """
    import json, sys
    import numpy as np
    import tritonclient.grpc as tc
    import tritonclient.utils.shared_memory as shm
    address, model, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    client = tc.InferenceServerClient(url=address)
    meta = client.get_model_metadata(model, as_json=True)
    spec, out_spec = meta["inputs"][0], meta["outputs"][0]
    shape = [int(d) for d in spec["shape"]]
    data = (np.arange(int(np.prod(shape))) % 251).astype(np.uint8).reshape(shape)
    out_size = int(np.prod([int(d) for d in out_spec["shape"]]))
    client.unregister_system_shared_memory()
    ih = shm.create_shared_memory_region("in" + tag, "/in" + tag, 64 + data.nbytes)
    oh = shm.create_shared_memory_region("out" + tag, "/out" + tag, 16 + out_size)
    shm.set_shared_memory_region(ih, [data], offset=64)
    client.register_system_shared_memory("in" + tag, "/in" + tag, 64 + data.nbytes)
    client.register_system_shared_memory("out" + tag, "/out" + tag, 16 + out_size)
    status = client.get_system_shared_memory_status(as_json=True)
    x = tc.InferInput(spec["name"], shape, "UINT8")
    x.set_shared_memory("in" + tag, data.nbytes, offset=64)
    y = tc.InferRequestedOutput(out_spec["name"])
    y.set_shared_memory("out" + tag, out_size, offset=16)
    result = client.infer(model, [x], outputs=[y])
    got = shm.get_contents_as_numpy(oh, np.uint8, [out_size], offset=16).copy()  # a view dies with the region
    raw_len = [len(r) for r in result.get_response().raw_output_contents]
    out_params = {k: str(v).strip() for k, v in result.get_response().outputs[0].parameters.items()}
    # the same input sent plainly, for comparison
    p = tc.InferInput(spec["name"], shape, "UINT8")
    p.set_data_from_numpy(data)
    plain = client.infer(model, [p]).as_numpy(out_spec["name"])
    # input in shared memory, output back in raw_output_contents
    mixed = client.infer(model, [x]).as_numpy(out_spec["name"])
    meta_ext = client.get_server_metadata(as_json=True)["extensions"]
    client.unregister_system_shared_memory("in" + tag)
    after = client.get_system_shared_memory_status(as_json=True)
    client.unregister_system_shared_memory()
    shm.destroy_shared_memory_region(ih)
    shm.destroy_shared_memory_region(oh)
    print(json.dumps({"shm": got.tobytes().hex(), "plain": plain.tobytes().hex(), "mixed": mixed.tobytes().hex(),
                      "raw_len": raw_len, "status": status, "after": after, "extensions": meta_ext,
                      "out_params": out_params}))
"""


@needs_tritonclient
def test_tritonclient_shared_memory_gives_the_same_bytes_as_the_plain_path(daemon, test_data):
    tag = uuid.uuid4().hex[:8]
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SHM_SCRIPT), daemon.address, MODEL, tag],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    executor = TfliteExecutor(test_data / f"{MODEL}.tflite")
    spec = executor.inputs[0]
    data = (np.arange(int(np.prod(spec.shape))) % 251).astype(np.uint8).reshape(spec.shape)
    expected = executor.invoke([data])[0].tobytes().hex()
    executor.close()
    assert out["plain"] == expected
    assert out["shm"] == expected and out["mixed"] == expected
    assert out["raw_len"] == [0]  # the output went to shared memory, not into the response
    assert "shared_memory_region" in out["out_params"]
    regions = out["status"]["regions"]
    assert regions[f"in{tag}"]["key"] == f"/in{tag}" and int(regions[f"in{tag}"]["byte_size"]) == 64 + data.nbytes
    assert list(out["after"].get("regions", {})) == [f"out{tag}"]
    assert "system_shared_memory" in out["extensions"]


# ------------------------------------------------------------------ refusals, the daemon serving on

class Shm:
    """A POSIX shm object made by the test (as an app would), removed afterwards."""

    def __init__(self, size: int) -> None:
        self.key = f"/edgetpud-test-{uuid.uuid4().hex[:10]}"
        self.path = Path("/dev/shm") / self.key[1:]
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.ftruncate(fd, size)
        os.close(fd)

    def write(self, offset: int, data: bytes) -> None:
        fd = os.open(self.path, os.O_RDWR)
        os.pwrite(fd, data, offset)
        os.close(fd)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@pytest.fixture()
def stub(daemon):
    with grpc.insecure_channel(daemon.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture()
def model_io(stub):
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=30)
    shape = [int(d) for d in meta.inputs[0].shape]
    return meta.inputs[0].name, shape, int(np.prod(shape)), meta.outputs[0].name


def shm_request(model_io, region: str, byte_size: int, offset: int = 0, output_region: str = "",
                output_size: int = 1001) -> pb.ModelInferRequest:
    name, shape, _, out_name = model_io
    request = pb.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name=name, datatype="UINT8", shape=shape)
    tensor.parameters["shared_memory_region"].string_param = region
    tensor.parameters["shared_memory_byte_size"].int64_param = byte_size
    tensor.parameters["shared_memory_offset"].int64_param = offset
    if output_region:
        out = request.outputs.add(name=out_name)
        out.parameters["shared_memory_region"].string_param = output_region
        out.parameters["shared_memory_byte_size"].int64_param = output_size
    return request


def plain_works(stub, model_io) -> None:
    name, shape, count, _ = model_io
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=name, datatype="UINT8", shape=shape)
    request.raw_input_contents.append(b"\7" * count)
    assert len(stub.ModelInfer(request, timeout=30).raw_output_contents[0]) > 0


def refused(call, code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    assert text in info.value.details()


@pytest.fixture()
def region(stub, model_io):
    """A registered region holding one input at offset 0, and its object."""
    count = model_io[2]
    obj = Shm(count + 4096)
    name = f"r{uuid.uuid4().hex[:8]}"
    stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(name=name, key=obj.key,
                                                                         byte_size=count + 4096), timeout=30)
    yield name, obj
    stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest(name=name), timeout=30)
    obj.remove()


def test_a_registered_region_serves_input_and_output(stub, model_io, region):
    name, obj = region
    obj.write(0, b"\7" * model_io[2])
    response = stub.ModelInfer(shm_request(model_io, name, model_io[2], output_region=name, output_size=1001),
                               timeout=30)
    assert list(response.raw_output_contents) == [b""]
    plain = pb.ModelInferRequest(model_name=MODEL)
    plain.inputs.add(name=model_io[0], datatype="UINT8", shape=model_io[1])
    plain.raw_input_contents.append(b"\7" * model_io[2])
    expected = stub.ModelInfer(plain, timeout=30).raw_output_contents[0]
    assert obj.path.read_bytes()[:len(expected)] == expected


@pytest.mark.parametrize("offset, size, text", [
    (4097, None, "do not fit in shared memory region"),          # offset + size past the region
    (0, 100, "needs 49152 bytes, but shared_memory_byte_size is 100"),
    (-1, None, "shared_memory_offset must be >= 0"),
], ids=["offset-past-end", "wrong-size", "negative-offset"])
def test_bad_offsets_and_sizes_are_invalid_argument(stub, model_io, region, offset, size, text):
    name, _ = region
    request = shm_request(model_io, name, size if size is not None else model_io[2], offset=offset)
    refused(lambda: stub.ModelInfer(request, timeout=30), grpc.StatusCode.INVALID_ARGUMENT, text)
    plain_works(stub, model_io)


def test_an_output_target_too_small_is_invalid_argument_before_the_model_runs(stub, model_io, region):
    name, _ = region
    request = shm_request(model_io, name, model_io[2], output_region=name, output_size=10)
    refused(lambda: stub.ModelInfer(request, timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
            "shared_memory_byte_size 10 is too small, the output needs 1001 bytes")
    plain_works(stub, model_io)


def test_an_unregistered_region_is_not_found(stub, model_io):
    request = shm_request(model_io, "never-registered", model_io[2])
    refused(lambda: stub.ModelInfer(request, timeout=30), grpc.StatusCode.NOT_FOUND,
            "no shared memory region 'never-registered' is registered")
    refused(lambda: stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(name="never-registered"),
                                                  timeout=30), grpc.StatusCode.NOT_FOUND, "never-registered")
    plain_works(stub, model_io)


def test_a_region_whose_object_vanished_is_not_found(stub, model_io, region):
    name, obj = region
    obj.remove()
    refused(lambda: stub.ModelInfer(shm_request(model_io, name, model_io[2]), timeout=30),
            grpc.StatusCode.NOT_FOUND, "was removed or replaced since it was registered")
    plain_works(stub, model_io)


def test_a_region_whose_object_shrank_is_invalid_argument(stub, model_io, region):
    name, obj = region
    os.truncate(obj.path, 10)
    refused(lambda: stub.ModelInfer(shm_request(model_io, name, model_io[2]), timeout=30),
            grpc.StatusCode.INVALID_ARGUMENT, "shrank to 10 bytes")
    plain_works(stub, model_io)


def test_register_refusals_say_what_is_wrong(stub, model_io, region):
    name, obj = region

    def register(**fields):
        return lambda: stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(**fields), timeout=30)
    refused(register(name="x", key="/no-such-object-edgetpud", byte_size=8), grpc.StatusCode.NOT_FOUND,
            "no shared memory object '/no-such-object-edgetpud'")
    refused(register(name="x", key=obj.key, byte_size=10 ** 9), grpc.StatusCode.INVALID_ARGUMENT,
            "run past the end of")
    refused(register(name="x", key="/../etc/passwd", byte_size=8), grpc.StatusCode.INVALID_ARGUMENT,
            "is not a POSIX shm name")
    refused(register(name="x", key=obj.key, byte_size=0), grpc.StatusCode.INVALID_ARGUMENT, "byte_size > 0")
    refused(register(name=name, key=obj.key, byte_size=8), grpc.StatusCode.ALREADY_EXISTS, "already registered")
    plain_works(stub, model_io)


def test_tensor_parameter_mistakes_are_invalid_argument(stub, model_io, region):
    name, _ = region
    request = shm_request(model_io, name, model_io[2])
    del request.inputs[0].parameters["shared_memory_byte_size"]
    refused(lambda: stub.ModelInfer(request, timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
            "no shared_memory_byte_size")
    request = shm_request(model_io, name, model_io[2])
    del request.inputs[0].parameters["shared_memory_region"]
    refused(lambda: stub.ModelInfer(request, timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
            "without shared_memory_region")
    request = shm_request(model_io, name, model_io[2])
    request.raw_input_contents.append(b"\0" * model_io[2])  # raw bytes for an input read from shared memory
    refused(lambda: stub.ModelInfer(request, timeout=30), grpc.StatusCode.INVALID_ARGUMENT,
            "0 input(s) not in shared memory described but 1 raw_input_contents sent")
    plain_works(stub, model_io)

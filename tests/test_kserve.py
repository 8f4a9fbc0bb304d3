"""KServe v2 / Open Inference Protocol: wire compatibility, input checks, and tritonclient end to end.

tritonclient registers its own copy of the ``inference`` protos in protobuf's default
descriptor pool, which clashes with ours in one process, so everything that imports
tritonclient runs in a child process.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest

from daemon_fixture import real_daemon_fixture
from edgetpud.daemon.api.kserve import input_arrays, requested_outputs
from edgetpud.daemon.api.status import RequestError
from edgetpud.hal.executor import TensorSpec, TfliteExecutor
from edgetpud.protos.kserve import grpc_predict_v2_pb2 as ours

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

#: tritonclient[grpc] needs grpcio >= 1.81.1, which has no release for Python 3.9;
#: the dev extra installs it everywhere else, CI included.
needs_tritonclient = pytest.mark.skipif(
    importlib.util.find_spec("tritonclient") is None,
    reason="tritonclient is not installed (tritonclient[grpc] needs Python >= 3.10)",
)

MODEL = "mobilenet_v1_0.25_128_quant"


def run_python(code: str, timeout: float = 120) -> dict:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ wire compatibility

def _fields(descriptor) -> dict:
    out = {}
    for f in descriptor.fields:
        out[f.name] = [f.number, f.type, bool(f.is_repeated), f.message_type.full_name if f.message_type else None]
    for nested in descriptor.nested_types:
        out.update({f"{nested.name}.{k}": v for k, v in _fields(nested).items()})
    return out


@needs_tritonclient
def test_our_messages_and_methods_are_wire_compatible_with_tritonclient():
    theirs = run_python("""
        import json
        from tritonclient.grpc import service_pb2 as s
        def fields(d):
            out = {}
            for f in d.fields:
                kind = f.message_type.full_name if f.message_type else None
                out[f.name] = [f.number, f.type, bool(f.is_repeated), kind]
            for n in d.nested_types:
                out.update({f"{n.name}.{k}": v for k, v in fields(n).items()})
            return out
        service = s.DESCRIPTOR.services_by_name["GRPCInferenceService"]
        print(json.dumps({
            "messages": {n: fields(m) for n, m in s.DESCRIPTOR.message_types_by_name.items()},
            "methods": {m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods},
        }))
    """)
    for name, message in ours.DESCRIPTOR.message_types_by_name.items():
        assert name in theirs["messages"], f"tritonclient has no message {name}"
        assert _fields(message) == theirs["messages"][name], f"message {name} differs from tritonclient's"
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    for method in service.methods:
        assert theirs["methods"][method.name] == [method.input_type.full_name, method.output_type.full_name]


# ------------------------------------------------------------------ input checks

SPECS = [TensorSpec("image", 0, (1, 2, 2, 3), np.dtype(np.uint8))]


def _request(datatype="UINT8", shape=(1, 2, 2, 3), raw=b"\1" * 12, name="image"):
    request = ours.ModelInferRequest(model_name="m")
    request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def test_raw_and_typed_contents_decode_to_the_model_dtype():
    arrays = input_arrays(_request(), SPECS)
    assert arrays["image"].dtype == np.uint8 and arrays["image"].shape == (1, 2, 2, 3)
    typed = _request(raw=None)
    typed.inputs[0].contents.uint_contents.extend(range(12))
    np.testing.assert_array_equal(input_arrays(typed, SPECS)["image"].ravel(), np.arange(12, dtype=np.uint8))


@pytest.mark.parametrize("request_args, message", [
    ({"datatype": "FP32", "raw": b"\0" * 48}, "must have datatype UINT8, got FP32"),
    ({"shape": (1, 4, 3)}, "must have shape [1, 2, 2, 3], got [1, 4, 3]"),
    ({"raw": b"\0" * 5}, "needs 12 bytes, got 5"),
    ({"name": "pixels"}, "has no input 'pixels'"),
])
def test_wrong_inputs_are_refused_naming_the_tensor(request_args, message):
    with pytest.raises(RequestError) as info:
        input_arrays(_request(**request_args), SPECS)
    assert message in str(info.value)


def _typed(datatype="UINT8", field="uint_contents", values=range(12), name="image"):
    request = _request(datatype=datatype, raw=None, name=name)
    getattr(request.inputs[0].contents, field).extend(values)
    return request


@pytest.mark.parametrize("request_, specs, message", [
    (_typed(values=[300] + [0] * 11), SPECS, "value 300 is out of range for UINT8 (0..255)"),
    (_typed(values=[-1] + [0] * 11, field="int_contents", datatype="INT8"),
     [TensorSpec("image", 0, (1, 2, 2, 3), np.dtype(np.int8))], None),
    (_typed(values=[200] + [0] * 11, field="int_contents", datatype="INT8"),
     [TensorSpec("image", 0, (1, 2, 2, 3), np.dtype(np.int8))], "value 200 is out of range for INT8 (-128..127)"),
    (_typed(field="int_contents"), SPECS, "12 values expected in contents.uint_contents (UINT8), got 0"),
    (_typed(datatype="FP16", field="bytes_contents", values=[b"\0\0"] * 12),
     [TensorSpec("image", 0, (1, 2, 2, 3), np.dtype(np.float16))], "FP16 values have no typed contents field"),
], ids=["over-uint8", "int8-in-range", "over-int8", "wrong-field", "fp16-typed"])
def test_typed_contents_are_range_checked_and_named(request_, specs, message):
    if message is None:
        assert input_arrays(request_, specs)["image"].ravel()[0] == -1
        return
    with pytest.raises(RequestError) as info:
        input_arrays(request_, specs)
    assert message in str(info.value)


def test_an_input_sent_twice_is_refused():
    request = _typed()
    request.inputs.add(name="image", datatype="UINT8", shape=[1, 2, 2, 3]).contents.uint_contents.extend(range(12))
    with pytest.raises(RequestError, match="input 'image' is sent twice"):
        input_arrays(request, SPECS)


def test_unknown_requested_output_is_refused():
    request = _request()
    request.outputs.add(name="nope")
    with pytest.raises(RequestError, match="no output"):
        requested_outputs(request, [TensorSpec("scores", 1, (1, 10), np.dtype(np.uint8))])


# ------------------------------------------------------------------ tritonclient against the real daemon

daemon = real_daemon_fixture("kserve", [MODEL])


TRITON_SCRIPT = """
    import json, sys
    import numpy as np
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException
    address, model, shape, dtype = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    client = tc.InferenceServerClient(url=address)
    out = {"live": client.is_server_live(), "ready": client.is_server_ready(),
           "model_ready": client.is_model_ready(model), "unknown_ready": client.is_model_ready("nope")}
    meta = client.get_model_metadata(model, as_json=True)
    out["metadata"] = meta
    data = (np.arange(int(np.prod(shape))) % 251).astype(dtype).reshape(shape)
    inp = tc.InferInput(meta["inputs"][0]["name"], list(shape), tc.np_to_triton_dtype(data.dtype))
    inp.set_data_from_numpy(data)
    try:
        result = client.infer(model, [inp])
        name = meta["outputs"][0]["name"]
        out["output"] = result.as_numpy(name).tobytes().hex()
        out["output_shape"] = list(result.as_numpy(name).shape)
    except InferenceServerException as exc:
        out["error"] = [exc.status(), exc.message()]
    print(json.dumps(out))
"""


def triton(address: str, model: str, shape, dtype: str) -> dict:
    code = textwrap.dedent(TRITON_SCRIPT)
    result = subprocess.run([sys.executable, "-c", code, address, model, json.dumps(list(shape)), dtype],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@needs_tritonclient
def test_tritonclient_model_infer_matches_the_in_process_interpreter(daemon, test_data):
    executor = TfliteExecutor(test_data / f"{MODEL}.tflite")
    spec = executor.inputs[0]
    data = (np.arange(int(np.prod(spec.shape))) % 251).astype(spec.dtype).reshape(spec.shape)
    expected = executor.invoke([data])[0]
    executor.close()
    out = triton(daemon.address, MODEL, spec.shape, spec.dtype.name)
    assert out["live"] and out["ready"] and out["model_ready"] and not out["unknown_ready"]
    assert out["metadata"]["inputs"][0]["datatype"] == "UINT8"
    assert [int(d) for d in out["metadata"]["inputs"][0]["shape"]] == list(spec.shape)
    assert out["output_shape"] == list(expected.shape)
    assert bytes.fromhex(out["output"]) == expected.tobytes()


@needs_tritonclient
@pytest.mark.parametrize("shape, dtype, message", [
    ((1, 64, 64, 3), "uint8", "must have shape [1, 128, 128, 3]"),
    ((1, 128, 128, 3), "float32", "must have datatype UINT8, got FP32"),
])
def test_tritonclient_wrong_shape_or_dtype_is_invalid_argument(daemon, shape, dtype, message):
    out = triton(daemon.address, MODEL, shape, dtype)
    status, text = out["error"]
    assert status == str(grpc.StatusCode.INVALID_ARGUMENT) and message in text
    assert "output" not in out
    again = triton(daemon.address, MODEL, (1, 128, 128, 3), "uint8")  # the daemon keeps serving
    assert "output" in again


def test_typed_contents_out_of_range_over_the_wire_is_invalid_argument_and_the_daemon_keeps_serving(daemon):
    """A UINT8 value of 300 used to reach numpy as an OverflowError and come back INTERNAL."""
    from edgetpud.protos.kserve import grpc_predict_v2_pb2_grpc as ours_grpc

    with grpc.insecure_channel(daemon.address) as channel:
        stub = ours_grpc.GRPCInferenceServiceStub(channel)
        meta = stub.ModelMetadata(ours.ModelMetadataRequest(name=MODEL), timeout=30).inputs[0]
        count = int(np.prod(meta.shape))

        def infer(first: int) -> ours.ModelInferResponse:
            request = ours.ModelInferRequest(model_name=MODEL)
            tensor = request.inputs.add(name=meta.name, datatype="UINT8", shape=list(meta.shape))
            tensor.contents.uint_contents.extend([first] + [7] * (count - 1))
            return stub.ModelInfer(request, timeout=30)

        with pytest.raises(grpc.RpcError) as info:
            infer(300)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "value 300 is out of range for UINT8 (0..255)" in info.value.details()
        assert len(infer(255).raw_output_contents) == 1  # the daemon keeps serving

"""``edgetpuctl check`` through its ``main()``: JSON contract, exit codes, bad input without tracebacks."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import flatbuffers
import numpy as np
import pytest

from edgetpud.daemon.cli import check as cli
from edgetpud.daemon.model._schema import schema
from edgetpud.daemon.model.builder import ModelBuilder
from edgetpud.daemon.model.tflite import TfliteModel


def chain(*ops: str, custom_first: str | None = None) -> bytes:
    """x -> op -> op ... -> y on int8 [1,8] tensors (a custom op first when asked)."""
    b = ModelBuilder()
    t = b.input("x", [1, 8], np.int8, 0.05, 0)
    if custom_first:
        out = b.tensor("c_out", [1, 8], np.int8, 0.05, 0)
        b.custom(custom_first, [t], [out])
        t = out
    for i, op in enumerate(ops):
        out = b.tensor(f"{op.lower()}_{i}", [1, 8], np.int8, 0.05, 0)
        b.op(op, [t], [out])
        t = out
    b.output(t)
    return b.build()


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def run_json(capsys, path: str, *extra: str) -> tuple[int, dict]:
    code, out, err = run_cli(capsys, path, "--json", *extra)
    return code, json.loads(out)


def test_full_model_exits_0_with_the_json_contract(tmp_path, capsys):
    path = write(tmp_path, "m.tflite", chain("RELU", "TANH"))
    code, doc = run_json(capsys, path)
    assert code == 0
    assert {"model", "verdict", "operators", "summary"} <= set(doc)
    assert doc["model"] == path and doc["verdict"] == "full"
    assert doc["summary"]["tpu_ops"] == 2 and doc["summary"]["cpu_ops"] == 0
    for entry in doc["operators"]:
        assert {"index", "op", "target", "reason"} <= set(entry)
    assert [(e["index"], e["op"], e["target"], e["reason"]) for e in doc["operators"]] == [
        (0, "RELU", "tpu", None), (1, "TANH", "tpu", None)]
    assert {"cut_point", "op_types", "warnings", "notes", "compiled", "runtime_version"} <= set(doc)


def test_partial_model_exits_2(tmp_path, capsys):
    path = write(tmp_path, "m.tflite", chain("RELU", "EXP", "TANH"))
    code, doc = run_json(capsys, path)
    assert code == 2 and doc["verdict"] == "partial"
    assert [e["target"] for e in doc["operators"]] == ["tpu", "cpu", "cpu"]
    assert doc["cut_point"]["index"] == 1 and doc["cut_point"]["op"] == "EXP"
    assert doc["operators"][2]["rule"] == "cut"


def test_unmappable_model_exits_3(tmp_path, capsys):
    path = write(tmp_path, "m.tflite", chain("EXP", "RELU"))
    code, doc = run_json(capsys, path)
    assert code == 3 and doc["verdict"] == "none" and doc["summary"]["tpu_ops"] == 0


def test_human_output(tmp_path, capsys):
    path = write(tmp_path, "m.tflite", chain("RELU", "EXP", "TANH"))
    code, out, err = run_cli(capsys, path)
    assert code == 2 and err == ""
    assert "Verdict: partial" in out
    assert "Cut point: op 1 (EXP)" in out
    assert "Operator" in out and "Count" in out and "Status" in out
    assert "Mapped to Edge TPU" in out and "More than one subgraph is not supported" in out
    lines = out.splitlines()
    first_ops = [line.split()[1] for line in lines if line.strip()[:1].isdigit()][:3]
    assert first_ops == ["RELU", "EXP", "TANH"]


def test_runtime_version_changes_the_verdict(tmp_path, capsys):
    path = write(tmp_path, "m.tflite", chain("RSQRT"))
    assert run_json(capsys, path)[0] == 0
    code, doc = run_json(capsys, path, "--runtime-version", "13")
    assert code == 3 and doc["runtime_version"] == 13
    assert doc["operators"][0]["rule"] == "runtime-version"


def test_float_io_warning_in_json(tmp_path, capsys):
    b = ModelBuilder()
    x = b.input("x", [1, 8], np.float32)
    q = b.tensor("q", [1, 8], np.int8, 0.05, 0)
    b.op("QUANTIZE", [x], [q])
    r = b.tensor("r", [1, 8], np.int8, 0.05, 0)
    b.op("RELU", [q], [r])
    y = b.tensor("y", [1, 8], np.float32)
    b.op("DEQUANTIZE", [r], [y])
    b.output(y)
    code, doc = run_json(capsys, write(tmp_path, "f.tflite", b.build()))
    assert code == 0 and doc["summary"]["boundary_ops"] == 2
    assert any("float I/O" in w for w in doc["warnings"])


# ------------------------------------------------------------------ bad input
def zero_subgraph_bytes() -> bytes:
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    model.subgraphs, model.operatorCodes = [], []
    builder = flatbuffers.Builder(64)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize("name,data,message", [
    ("text.tflite", b"this is not a model at all", "not a TFLite model"),
    ("empty.tflite", b"", "empty"),
    ("zero.tflite", None, "no subgraphs"),
    ("cut.tflite", "truncated", "truncated"),
])
def test_unreadable_models_exit_4(tmp_path, capsys, name, data, message):
    if data is None:
        data = zero_subgraph_bytes()
    elif data == "truncated":
        data = chain("RELU", "TANH")[:60]
    code, out, err = run_cli(capsys, write(tmp_path, name, data))
    assert code == 4 and out == ""
    assert err.startswith("edgetpuctl check: error:") and message in err


def test_missing_file_and_folder_exit_4(tmp_path, capsys):
    code, _, err = run_cli(capsys, str(tmp_path / "missing.tflite"))
    assert code == 4 and "does not exist" in err
    code, _, err = run_cli(capsys, str(tmp_path))
    assert code == 4 and "folder" in err


@pytest.mark.parametrize("value", ["0", "-3", "fourteen"])
def test_bad_runtime_version_exits_4(tmp_path, capsys, value):
    path = write(tmp_path, "m.tflite", chain("RELU"))
    with pytest.raises(SystemExit) as exc:
        cli.main([path, "--runtime-version", value])
    assert exc.value.code == 4
    assert "--runtime-version" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["m.tflite", "--runtime-version", "0"], ["m.tflite", "--no-such-flag"]])
def test_usage_errors_through_edgetpuctl_exit_4_not_2(tmp_path, capsys, argv):
    """2 would read as "partially mapped" to a script branching on the code."""
    from edgetpud.daemon.cli.main import main as edgetpuctl

    argv = [str(tmp_path / a) if a.endswith(".tflite") else a for a in argv]
    if argv:
        write(tmp_path, "m.tflite", chain("RELU"))
    with pytest.raises(SystemExit) as exc:
        edgetpuctl(["check", *argv])
    assert exc.value.code == 4
    assert "edgetpuctl check: error:" in capsys.readouterr().err


def test_several_subgraphs_checks_the_first_with_a_warning(tmp_path, capsys):
    b = ModelBuilder()
    x = b.input("x", [1, 8], np.int8, 0.05, 0)
    y = b.tensor("y", [1, 8], np.int8, 0.05, 0)
    b.op("RELU", [x], [y])
    b.output(y)
    body = b.add_subgraph("body")
    b.use_subgraph(body)
    bx = b.input("bx", [1, 8], np.int8, 0.05, 0)
    by = b.tensor("by", [1, 8], np.int8, 0.05, 0)
    b.op("EXP", [bx], [by])
    b.output(by)
    code, doc = run_json(capsys, write(tmp_path, "multi.tflite", b.build()))
    assert code == 0 and doc["subgraphs"] == 2
    assert [e["op"] for e in doc["operators"]] == ["RELU"]
    assert any("2 subgraphs" in w for w in doc["warnings"])


def test_unknown_builtin_op(tmp_path, capsys):
    model = TfliteModel.read(chain("RELU"))
    model.raw.operatorCodes[0].builtinCode = 250
    code, doc = run_json(capsys, write(tmp_path, "unknown.tflite", model.to_bytes()))
    assert code == 3
    assert doc["operators"][0]["op"] == "UNKNOWN_250"
    assert "code 250" in doc["operators"][0]["reason"]


def test_custom_op(tmp_path, capsys):
    code, doc = run_json(capsys, write(tmp_path, "custom.tflite", chain("RELU", custom_first="MyOp")))
    assert code == 3
    assert doc["operators"][0]["op"] == "MyOp" and "custom op 'MyOp'" in doc["operators"][0]["reason"]
    assert doc["operators"][1]["rule"] == "cut"


def test_compiled_model_reports_the_compilers_split(tmp_path, capsys):
    """A compiled file with a CPU op after the custom op; its twin names what went inside."""
    write(tmp_path, "m.tflite", chain("RELU", "TANH", "EXP"))
    b = ModelBuilder()
    x = b.input("x", [1, 8], np.int8, 0.05, 0)
    t = b.tensor("tanh_1", [1, 8], np.int8, 0.05, 0)
    b.custom("edgetpu-custom-op", [x], [t], options=b"\x00")
    y = b.tensor("exp_2", [1, 8], np.int8, 0.05, 0)
    b.op("EXP", [t], [y])
    b.output(y)
    path = write(tmp_path, "m_edgetpu.tflite", b.build())
    code, doc = run_json(capsys, path)
    assert code == 2 and doc["verdict"] == "partial"
    compiled = doc["compiled"]
    assert compiled["edgetpu_custom_ops"] == [0]
    assert compiled["cpu_ops"] == [{"index": 1, "op": "EXP"}]
    assert compiled["ops_inside"] == {"RELU": 1, "TANH": 1} and compiled["ops_inside_count"] == 2
    assert doc["operators"][1]["reason"].startswith("left on the CPU by edgetpu_compiler")
    code, out, _ = run_cli(capsys, path)
    assert "Inside the edgetpu-custom-op" in out and "RELU x1" in out


def test_real_compiled_model(test_data, capsys):
    code, doc = run_json(capsys, str(test_data / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"))
    assert code == 0 and doc["verdict"] == "full"
    assert doc["summary"] == {"tpu_ops": 1, "cpu_ops": 0, "total_ops": 1, "boundary_ops": 0}
    assert doc["compiled"]["ops_inside_count"] == 31


def test_real_invalid_model_is_a_report_not_an_error(test_data, capsys):
    code, doc = run_json(capsys, str(test_data / "invalid_models" / "model_invoking_error.tflite"))
    assert code == 3 and doc["operators"][0]["op"] == "fake-op-double"


def test_registers_on_edgetpuctl_subparsers(tmp_path, capsys):
    path = write(tmp_path, "m.tflite", chain("RELU"))
    parser = argparse.ArgumentParser(prog="edgetpuctl")
    parser.add_argument("--json", action="store_true")
    cli.add_parser(parser.add_subparsers(dest="command"))
    for argv in (["--json", "check", path], ["check", path, "--json"]):
        args = parser.parse_args(argv)
        assert args.json is True and args.func is cli.run
        assert args.func(args) == 0
        assert json.loads(capsys.readouterr().out)["verdict"] == "full"
    args = parser.parse_args(["check", path])
    assert args.json is False and args.runtime_version == 14


def _cast_prefix_model(compiled: bool) -> bytes:
    """MoveNet's shape: uint8 input, CAST, QUANTIZE, then RELU (or the custom op), then ARG_MAX."""
    b = ModelBuilder()
    x = b.input("image", [1, 8, 8, 3], np.uint8, 1.0, 0)
    f = b.tensor("image_f", [1, 8, 8, 3], np.float32)
    b.op("CAST", [x], [f])
    q = b.tensor("image_q", [1, 8, 8, 3], np.int8, 0.05, 0)
    b.op("QUANTIZE", [f], [q])
    r = b.tensor("relu_0", [1, 8, 8, 3], np.int8, 0.05, 0)
    if compiled:
        b.custom("edgetpu-custom-op", [q], [r], options=b"\x00")
    else:
        b.op("RELU", [q], [r])
    y = b.tensor("argmax_1", [1, 8, 8, 3], np.int8, 0.05, 0)
    b.op("ARG_MAX", [r], [y])
    b.output(y)
    return b.build()


def test_text_shows_the_compiler_log_observed_rules_and_uncertainty(tmp_path, capsys):
    code, out, _ = run_cli(capsys, write(tmp_path, "m.tflite", _cast_prefix_model(compiled=False)))
    assert code == 2
    log = out[out.index("As edgetpu_compiler -s would log it:"):]
    assert "Number of operations that will run on Edge TPU: 1\n" in log
    assert "Number of operations that will run on CPU: 3\n" in log
    assert f"{'CAST':<30} {'1':<10} Operation not supported\n" in log
    assert f"{'QUANTIZE':<30} {'1':<10} Operation is otherwise supported, but not mapped due to some " \
           "unspecified limitation\n" in log
    assert f"{'RELU':<30} {'1':<10} Mapped to Edge TPU\n" in log
    observed = out[out.index("Observed compiler behaviour (not documented):"):]
    assert "input-cast (ops 0, 1): observed behaviour of edgetpu_compiler 16" in observed


def test_json_adds_compiler_log_observed_and_uncertain_keys(tmp_path, capsys):
    b = ModelBuilder()
    x = b.input("x", [1, 2, 2, 4], np.int8, 0.05, 0)
    up = b.resize_bilinear(x, (31, 31), name="up")
    b.output(up)
    code, doc = run_json(capsys, write(tmp_path, "r.tflite", b.build()))
    assert code == 3 and doc["verdict"] == "none"
    assert {"model", "verdict", "operators", "summary", "op_types"} <= set(doc)
    assert doc["compiler_log"]["operators"] == [{
        "operator": "RESIZE_BILINEAR", "count": 1,
        "status": "Operation is otherwise supported, but not mapped due to some unspecified limitation"}]
    assert doc["uncertain"][0]["op"] == "RESIZE_BILINEAR" and "may differ" in doc["uncertain"][0]["text"]
    assert doc["observed_rules"][0]["compiler_version"] == "16"
    entry = doc["operators"][0]
    assert entry["basis"]["basis"] == "observed" and entry["compiler_status"] == entry["status"]


@pytest.mark.slow  # starts processes
def test_compiled_cast_prefix_logs_what_the_compiler_logged(tmp_path, capsys):
    write(tmp_path, "pose.tflite", _cast_prefix_model(compiled=False))
    path = write(tmp_path, "pose_edgetpu.tflite", _cast_prefix_model(compiled=True))
    code, doc = run_json(capsys, path)
    assert code == 2
    assert [(o["op"], o["boundary"]) for o in doc["operators"]] == [
        ("CAST", True), ("QUANTIZE", True), ("edgetpu-custom-op", False), ("ARG_MAX", False)]
    assert doc["compiler_log"]["edgetpu_ops"] == 1 and doc["compiler_log"]["cpu_ops"] == 3
    rows = [(r["operator"], r["status"]) for r in doc["compiler_log"]["operators"]]
    assert rows[0] == ("RELU", "Mapped to Edge TPU")
    assert ("ARG_MAX", "Operation not supported") in rows
    assert doc["cut_point"]["op"] == "ARG_MAX"


def closed_reader_run(*args: str) -> "subprocess.CompletedProcess[bytes]":
    """edgetpuctl with its stdout a pipe whose reader is gone before it writes (`| head` at its quickest)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "edgetpud.daemon.cli.main", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    return subprocess.CompletedProcess(args, proc.wait(60), b"", err)


def test_check_into_a_closed_pipe_stops_quietly(test_data: Path):
    done = closed_reader_run("--json", "check", str(test_data / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"))
    assert done.stderr == b""
    assert done.returncode == 141

"""Ground truth: the checker's CPU predictions against what edgetpu_compiler really did.

For every ``X.tflite`` in the Coral test data that has a compiled twin
``X_edgetpu.tflite`` (searched recursively), the ops predicted for the CPU
must be the ops the compiler left outside its ``edgetpu-custom-op``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from edgetpud.daemon.model.checker import check_model, cpu_twin_path
from edgetpud.daemon.model.tflite import TfliteModel


def compiled_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(CPU twin, compiled twin) for every ``*_edgetpu.tflite`` under ``root`` that has a twin."""
    pairs = []
    for compiled in sorted(root.rglob("*_edgetpu.tflite")):
        twin = cpu_twin_path(compiled)
        if twin is not None:
            pairs.append((twin, compiled))
    return pairs


def compiler_cpu_ops(compiled: Path) -> list[str]:
    """The ops edgetpu_compiler left on the CPU, in execution order."""
    return [op.opcode for op in TfliteModel.read(compiled).cpu_operators()]


def compiler_cpu_indices(twin: Path, compiled: Path) -> set[int]:
    """Indices of the twin's ops whose outputs the compiled file still computes outside the custom op."""
    model = TfliteModel.read(compiled)
    tensors = model.tensors()
    kept = {tensors[t].name for op in model.cpu_operators() for t in op.outputs if t >= 0}
    twin_model = TfliteModel.read(twin)
    twin_tensors = twin_model.tensors()
    return {
        op.index for op in twin_model.operators()
        if {twin_tensors[t].name for t in op.outputs if t >= 0} <= kept
    }


def test_the_test_data_has_compiled_twins(test_data):
    names = {twin.name for twin, _ in compiled_pairs(test_data)}
    assert {"mobilenet_v1_0.25_128_quant.tflite", "keras_lstm_mnist_ptq.tflite", "split_concat.tflite"} <= names


def test_predicted_cpu_ops_equal_the_compilers(test_data, record_property):
    rows = []
    for twin, compiled in compiled_pairs(test_data):
        report = check_model(twin)
        predicted, actual = report.cpu_op_names(), compiler_cpu_ops(compiled)
        placed = {e.index for e in report.operators if e.target == "cpu"}
        same = len(report.operators) - len(placed ^ compiler_cpu_indices(twin, compiled))
        rows.append((twin.relative_to(test_data), len(report.operators), same, predicted, actual))
    agree = sum(1 for *_, p, a in rows if p == a)
    ops_total = sum(r[1] for r in rows)
    ops_agree = sum(r[2] for r in rows)
    lines = [f"{str(name):<56} ops placed alike {same}/{n}  predicted CPU={p} compiler CPU={a}"
             for name, n, same, p, a in rows]
    summary = f"checker vs edgetpu_compiler: {agree}/{len(rows)} models agree, {ops_agree}/{ops_total} ops"
    print("\n" + "\n".join(lines) + "\n" + summary)
    record_property("agreement", summary)
    assert rows, "no X.tflite / X_edgetpu.tflite pairs found"
    mismatches = [(name, p, a) for name, _, _, p, a in rows if p != a]
    assert ops_agree == ops_total
    assert not mismatches, mismatches


def test_compiled_report_names_the_ops_inside_the_custom_op(test_data):
    """The twin's ops absent from the compiled file are inside the custom op: exactly our TPU prediction."""
    for twin, compiled in compiled_pairs(test_data):
        predicted = check_model(twin)
        report = check_model(compiled)
        assert report.compiled is not None and report.compiled.twin == str(twin)
        assert sum(report.compiled.ops_inside.values()) == predicted.tpu_ops
        assert report.verdict == predicted.verdict == "full"
        assert report.compiled.cpu_ops == []


def test_lstm_needs_runtime_14(test_data):
    """keras_lstm maps fully at runtime 14 (as compiled); at 13 the LSTM and everything after it stay on the CPU."""
    model = test_data / "keras_lstm_mnist_ptq.tflite"
    report = check_model(model, runtime_version=13)
    assert report.verdict == "partial"
    assert report.cut_point.op == "UNIDIRECTIONAL_SEQUENCE_LSTM" and report.cut_point.rule == "runtime-version"
    assert report.cpu_op_names() == ["UNIDIRECTIONAL_SEQUENCE_LSTM", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX",
                                     "QUANTIZE"]
    full = check_model(model)
    assert any(n["key"] == "int16-lstm-state" for n in full.notes)


def test_other_real_models(test_data):
    head = check_model(test_data / "tools" / "mobilenet_quant_v1_224_head_layers.tflite")
    assert head.verdict == "full" and [e.op for e in head.operators] == ["CONV_2D", "RESHAPE", "SOFTMAX"]
    body = check_model(test_data / "tools" / "mobilenet_quant_v1_224_feature_layers_edgetpu.tflite")
    assert body.compiled is not None and body.compiled.twin is None and body.verdict == "full"
    invalid = check_model(test_data / "invalid_models" / "model_invoking_error.tflite")
    assert invalid.verdict == "none"
    assert invalid.operators[0].reason.startswith("custom op 'fake-op-double'")


@pytest.mark.parametrize("runtime", [10, 12, 13, 14, 15])
def test_mobilenet_maps_on_every_runtime(test_data, runtime):
    report = check_model(test_data / "mobilenet_v1_0.25_128_quant.tflite", runtime_version=runtime)
    assert report.verdict == "full" and report.tpu_ops == 31

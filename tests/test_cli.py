"""edgetpuctl against the real daemon: the --json contract, exit codes, errors on stderr, tables."""
from __future__ import annotations

import io
import json

import pytest

from daemon_fixture import ctl, real_daemon_fixture
from edgetpud.daemon.cli.main import main

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

SMALL = "mobilenet_v1_0.25_128_quant"
LARGE = "mobilenet_v1_0.5_160_quant"


daemon = real_daemon_fixture("cli", [SMALL, LARGE])


def run(daemon, *args):
    out, err = io.StringIO(), io.StringIO()
    code = main(["--address", daemon.address, *args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def run_json(daemon, *args):
    code, out, err = run(daemon, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_status_json_and_exit_code_as_a_separate_process(daemon):
    result = ctl("--json", "status", address=daemon.address)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ready"] is True
    assert [d["id"] for d in document["devices"]] == ["mock:0"]
    assert {m["name"] for m in document["models"]} == {SMALL, LARGE}


def test_status_of_an_absent_daemon_fails_on_stderr(tmp_path):
    result = ctl("--json", "--timeout", "3", "status", address=f"unix:{tmp_path / 'none.sock'}")
    assert result.returncode != 0 and result.stdout == ""
    assert "cannot reach edgetpud" in result.stderr


def test_devices_json_keys(daemon):
    device = run_json(daemon, "devices")["devices"][0]
    assert {"id", "kind", "state", "temperature_c"} <= set(device)
    assert (device["id"], device["kind"], device["state"]) == ("mock:0", "mock", "ready")


@pytest.mark.parametrize("model, expected, min_score", [(SMALL, 283, 0.25), (LARGE, 286, 0.51)])
def test_classify_json_contract(daemon, test_data, model, expected, min_score):
    image = str(test_data / "cat.bmp")
    document = run_json(daemon, "classify", "-m", model, "-k", "3", image)
    [result] = document["results"]
    assert result["image"] == image and result["model"] == model and result["device"] == "mock:0"
    assert all(set(c) == {"id", "label", "score"} for c in result["classes"])
    assert any(c["id"] == expected and c["score"] >= min_score for c in result["classes"])


def test_classify_several_images_with_json_after_the_command(daemon, test_data):
    images = [str(test_data / "cat.bmp"), str(test_data / "bird.bmp")]
    code, out, err = run(daemon, "classify", "--model", SMALL, *images, "--json")
    assert code == 0, err
    assert [r["image"] for r in json.loads(out)["results"]] == images


def test_classify_human_table(daemon, test_data):
    code, out, _ = run(daemon, "classify", "-m", SMALL, "-k", "2", str(test_data / "cat.bmp"))
    assert code == 0
    header = out.splitlines()[1].split()
    assert header == ["ID", "LABEL", "SCORE"] and len(out.splitlines()) == 4


def test_models_list_info_load_unload(daemon):
    assert {m["name"] for m in run_json(daemon, "models", "list")["models"]} == {SMALL, LARGE}
    info = run_json(daemon, "models", "info", SMALL)
    assert info["name"] == SMALL and info["state"] == "ready" and info["report"]["verdict"]
    assert info["inputs"][0]["shape"] == [1, 128, 128, 3]
    loaded = run_json(daemon, "models", "load", "again", str(daemon.models_dir / SMALL))
    assert loaded["name"] == "again" and loaded["state"] == "ready"
    assert run_json(daemon, "models", "unload", "again") == {"unloaded": "again"}
    code, out, err = run(daemon, "--json", "models", "info", "again")
    assert code == 1 and out == "" and "NOT_FOUND" in err


def test_errors_go_to_stderr_with_nonzero_exit(daemon, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    code, out, err = run(daemon, "--json", "classify", "-m", SMALL, str(bad))
    assert code == 1 and "INVALID_ARGUMENT" in err and str(bad) in err
    assert json.loads(out)["results"][0]["error"]["code"] == "INVALID_ARGUMENT"
    code, out, err = run(daemon, "classify", "-m", SMALL, str(tmp_path / "missing.jpg"))
    assert code == 1 and "missing.jpg" in err and out == ""
    code, out, err = run(daemon, "--json", "classify", "-m", "no-such-model", str(bad))
    assert code == 1 and out == "" and "NOT_FOUND" in err  # not about the image: the whole command fails


def test_a_failed_image_is_reported_and_the_others_still_get_results(daemon, test_data, tmp_path):
    """One bad file among several: every good image keeps its result, each failure names its file."""
    notimg = tmp_path / "notimg.txt"
    notimg.write_text("not an image")
    missing = str(tmp_path / "missing.jpg")
    images = [str(test_data / "cat.bmp"), str(notimg), missing, str(test_data / "parrot.jpg")]
    code, out, err = run(daemon, "--json", "classify", "-m", SMALL, *images)
    assert code == 1
    results = json.loads(out)["results"]
    assert [r["image"] for r in results] == images
    assert results[0]["classes"] and results[3]["classes"] and results[0]["device"] == "mock:0"
    assert results[1]["error"]["code"] == "INVALID_ARGUMENT" and "classes" not in results[1]
    assert results[2]["error"]["code"] == "ENOENT"
    assert str(notimg) in err and missing in err
    code, out, err = run(daemon, "classify", "-m", SMALL, *images)
    assert code == 1 and images[0] in out and images[3] in out and str(notimg) not in out
    assert f"{notimg}: INVALID_ARGUMENT" in err and f"{missing}: ENOENT" in err
    code, out, _ = run(daemon, "--json", "classify", "-m", SMALL, images[0], images[3])
    assert code == 0 and all("error" not in r for r in json.loads(out)["results"])


@pytest.mark.parametrize("option, message", [
    (["--crop", "10,10"], "--crop: expected X,Y,W,H"), (["--crop", "0,0,0,5"], "--crop: X and Y must be >= 0"),
    (["--crop", "a,b,c,d"], "--crop: expected X,Y,W,H"), (["-k", "-1"], "-k/--top-k: expected an integer from 0 to 10000"),
    (["-t", "abc"], "-t/--threshold: expected a number >= 0")])
def test_malformed_inference_options_are_usage_errors(daemon, test_data, option, message):
    result = ctl("classify", "-m", SMALL, *option, str(test_data / "cat.bmp"), address=daemon.address)
    assert result.returncode == 2 and result.stdout == "" and message in result.stderr, result.stderr
    assert "usage: edgetpuctl classify" in result.stderr


def test_a_crop_is_applied(daemon, test_data):
    image = str(test_data / "cat.bmp")
    code, out, err = run(daemon, "--json", "classify", "-m", SMALL, "--crop", "0,0,16,16", image)
    assert code == 0 and json.loads(out)["results"][0]["classes"], err


def test_classify_without_model_picks_the_only_candidate_or_asks(daemon, test_data):
    code, _, err = run(daemon, "classify", str(test_data / "cat.bmp"))
    assert code == 1 and "--model" in err  # two classifiers are loaded


def test_mock_commands(daemon):
    document = run_json(daemon, "mock", "temperature", "mock:0", "50")
    assert document["devices"][0]["id"] == "mock:0"
    run_json(daemon, "mock", "latency", "mock:0", "-1")
    code, _, err = run(daemon, "mock", "unplug", "mock:7")
    assert code == 1 and "NOT_FOUND" in err


def test_check_runs_without_a_daemon(test_data):
    out, err = io.StringIO(), io.StringIO()
    import contextlib
    with contextlib.redirect_stdout(out):
        code = main(["--json", "check", str(test_data / f"{SMALL}_edgetpu.tflite")], stdout=out, stderr=err)
    assert code == 0 and json.loads(out.getvalue())["verdict"] == "full"


def test_embed_into_a_closed_pipe_stops_quietly(daemon, test_data):
    from test_check_cli import closed_reader_run

    done = closed_reader_run("--address", daemon.address, "--json", "embed", "--model", SMALL,
                             str(test_data / "cat.bmp"))
    assert done.stderr == b""
    assert done.returncode == 141


def test_models_load_takes_a_labels_file_by_path_and_by_upload(daemon, test_data, tmp_path):
    # It took none: a model without labels.txt answered with ids only.
    labels = tmp_path / "mine.txt"
    labels.write_text("".join(f"{i} class{i}\n" for i in range(1001)))
    model = test_data / f"{SMALL}.tflite"
    for name, extra in (("labelled", []), ("labelled_up", ["--upload"])):
        loaded = run_json(daemon, "models", "load", name, str(model), "--labels", str(labels), *extra)
        assert loaded["label_count"] == 1001
        top = run_json(daemon, "classify", "-m", name, "-k", "1", str(test_data / "cat.bmp"))
        assert top["results"][0]["classes"][0]["label"] == "class283"
        assert run(daemon, "models", "unload", name)[0] == 0
    code, _, err = run(daemon, "models", "load", "labelled", str(model), "--labels", str(tmp_path / "none.txt"))
    assert code == 1 and "none.txt" in err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"0 a\n0 b\n")
    code, _, err = run(daemon, "models", "load", "labelled", str(model), "--labels", str(bad))
    assert code == 1 and "FAILED_PRECONDITION: the labels file sent with the load: id 0 appears twice" in err, err


def test_metrics_shows_requests_latency_and_device_utilisation(daemon, test_data):
    before = run_json(daemon, "metrics")
    counted = {r["model"]: r["count"] for r in before["requests"]}.get(SMALL, 0)
    for _ in range(3):
        run_json(daemon, "classify", "-m", SMALL, str(test_data / "cat.bmp"))
    after = run_json(daemon, "metrics")
    small = next(r for r in after["requests"] if r["model"] == SMALL)
    assert small["count"] == counted + 3 and small["codes"]["OK"] >= 3
    assert 0 < small["p50_s"] <= small["p90_s"] <= small["p99_s"]
    (device,) = after["devices"]
    assert device["device"] == "mock:0" and device["invocations"] >= 3 and 0 < device["utilization"] <= 1
    code, text, _ = run(daemon, "metrics")
    assert code == 0 and "P99 MS" in text and SMALL in text and "UTILISATION" in text


def test_an_image_over_the_message_limit_is_named_with_its_size_the_limit_and_the_way_out(daemon, test_data,
                                                                                          tmp_path):
    # It was "RESOURCE_EXHAUSTED: SERVER: Received message larger than max (22500093 vs. 16777216)": no file
    # name, no way out, and the other images got no results.
    from PIL import Image

    big = tmp_path / "big.bmp"
    Image.new("RGB", (3000, 2500), (120, 60, 30)).save(big)
    code, out, err = run(daemon, "--json", "classify", "-m", SMALL, str(big), str(test_data / "cat.bmp"))
    assert code == 1
    refused, served = json.loads(out)["results"]
    assert refused["image"] == str(big) and refused["error"]["code"] == "RESOURCE_EXHAUSTED"
    message = refused["error"]["message"]
    for fragment in (f"image {big} (22.5 MB)", "over the daemon's limit of 16777216 bytes (max_message_bytes in "
                     "edgetpud.toml)", "send a smaller image", "a raw frame at the model's input size",
                     "raise max_message_bytes"):
        assert fragment in message, message
    assert f"{big}: RESOURCE_EXHAUSTED" in err
    assert served["classes"]


def test_status_json_summarises_the_compatibility_report(daemon):
    # status --json printed every operator of every model; the report belongs to models info.
    document = run_json(daemon, "status")
    small = next(m for m in document["models"] if m["name"] == SMALL)
    assert small["report"] == {"verdict": "full", "summary": {"tpu_ops": small["report"]["summary"]["tpu_ops"],
                                                              "cpu_ops": 0}}
    assert small["report"]["summary"]["tpu_ops"] > 0
    assert len(run_json(daemon, "models", "info", SMALL)["report"]["operators"]) > 0

"""edgetpuctl at its edges: option values that are usage errors."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from daemon_fixture import ctl, real_daemon_fixture
from edgetpud.daemon.cli.main import main

SMALL = "mobilenet_v1_0.25_128_quant"

daemon = real_daemon_fixture("cli_edges", [SMALL])


def run(address: str, *args: str):
    out, err = io.StringIO(), io.StringIO()
    code = main(["--address", address, *args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------ usage errors

@pytest.mark.parametrize("args, message", [
    (["--timeout", "0", "status"], "--timeout: expected a number > 0"),
    (["--timeout", "-1", "status"], "--timeout: expected a number > 0"),
    (["--timeout", "nan", "status"], "--timeout: expected a number > 0"),
    (["mock", "fault", "mock:0", "error", "--count", "-1"], "--count: expected an integer >= 1"),
    (["mock", "fault", "mock:0", "error", "--count", "0"], "--count: expected an integer >= 1"),
    (["mock", "fault", "mock:0", "hang", "--seconds", "-5"], "--seconds: expected a number >= 0"),
    (["mock", "fault", "mock:0", "abort", "--after", "inf"], "--after: expected a number >= 0"),
    (["mock", "temperature", "mock:0", "nan"], "celsius: expected a finite number"),
    (["mock", "latency", "mock:0", "nan"], "ms: expected a finite number"),
], ids=["timeout-0", "timeout-negative", "timeout-nan", "count-negative", "count-0", "seconds-negative",
        "after-inf", "temperature-nan", "latency-nan"])
def test_out_of_range_options_are_usage_errors(daemon, args, message):
    """They used to reach the daemon: 'DEADLINE_EXCEEDED: Deadline Exceeded' for --timeout 0, a protobuf
    'Value out of range: -1' for --count -1, one fault injected for --count 0, a NaN latency set."""
    result = ctl(*args, address=daemon.address)
    assert result.returncode == 2 and result.stdout == "" and message in result.stderr, result.stderr
    assert "usage: edgetpuctl" in result.stderr
    code, out, _ = run(daemon.address, "--json", "classify", "-m", SMALL,
                       str(Path(__file__).parent / "no-such.jpg"))
    assert code == 1 and json.loads(out)["results"][0]["error"]["code"] == "ENOENT"
    assert run(daemon.address, "--json", "devices")[0] == 0  # nothing was injected: the daemon still serves

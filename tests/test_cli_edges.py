"""edgetpuctl and the client library at their edges: option values that are usage errors, and a daemon
that goes away in the middle of a call."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest

from daemon_fixture import ctl, real_daemon_fixture
from edgetpud.client import Client, ClientError
from edgetpud.daemon.cli.main import main

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

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
    (["classify", "-k", "99999999999999999999", "x.jpg"], "--top-k: expected an integer from 0 to 10000"),
    (["classify", "-k", "100000", "x.jpg"], "--top-k: expected an integer from 0 to 10000"),
    (["classify", "-t", "2", "x.jpg"], "--threshold: expected a score from 0 to 1"),
    (["detect", "-t", "-1", "x.jpg"], "--threshold: expected a number >= 0"),
], ids=["timeout-0", "timeout-negative", "timeout-nan", "count-negative", "count-0", "seconds-negative",
        "after-inf", "temperature-nan", "latency-nan", "top-k-huge", "top-k-100000", "threshold-2",
        "threshold-negative"])
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


def test_an_error_names_the_whole_command(daemon):
    code, out, err = run(daemon.address, "--json", "models", "info", "nope")
    assert code == 1 and out == ""
    assert err.startswith("edgetpuctl models info: error: NOT_FOUND: ")


# ------------------------------------------------------------------ a daemon that is not there, or goes away

def test_an_empty_address_names_the_address_tried(tmp_path, monkeypatch):
    """--address '' falls back to the default address; the message said 'cannot reach edgetpud at :'."""
    monkeypatch.setenv("EDGETPUD_ADDRESS", f"unix:{tmp_path / 'none.sock'}")
    code, out, err = run("", "--timeout", "3", "--json", "status")
    assert code == 1 and out == ""
    assert f"UNAVAILABLE: cannot reach edgetpud at unix:{tmp_path / 'none.sock'}: is it running?" in err


#: A stand-in daemon that takes any call, says so on stdout, and never answers: the test kills it mid-call.
SILENT_SERVER = """
    import sys, threading, grpc
    from concurrent import futures
    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            def hold(request, context):
                print("called", details.method, flush=True)
                threading.Event().wait()
            return grpc.unary_unary_rpc_method_handler(hold)
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[Handler()])
    server.add_insecure_port(sys.argv[1])
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()
"""


class SilentDaemon:
    def __init__(self, socket: Path) -> None:
        self.address = f"unix:{socket}"
        self.process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SILENT_SERVER), self.address],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "listening"

    def kill_once_called(self) -> str:
        line = self.process.stdout.readline().strip()
        self.process.kill()
        self.process.wait(10)
        return line


def test_a_daemon_that_goes_away_mid_call_is_unavailable_and_says_so(tmp_path):
    """The message was gRPC's bare 'Stream removed (Socket closed)'."""
    silent = SilentDaemon(tmp_path / "silent.sock")
    ctl_call = subprocess.Popen([sys.executable, "-m", "edgetpud.daemon.cli.main", "--address", silent.address,
                                 "--json", "status"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert silent.kill_once_called() == "called /edgetpud.v1.Daemon/Status"
    out, err = ctl_call.communicate(timeout=60)
    assert ctl_call.returncode == 1 and out == ""
    assert f"edgetpuctl status: error: UNAVAILABLE: lost the connection to edgetpud at {silent.address}" in err
    assert "may or may not have run" in err and "Traceback" not in err

    silent = SilentDaemon(tmp_path / "silent2.sock")
    with Client(silent.address, timeout=60) as client:
        import threading
        failures = []

        def call() -> None:
            try:
                client.models()
            except ClientError as exc:
                failures.append(exc)
        thread = threading.Thread(target=call)
        thread.start()
        assert silent.kill_once_called() == "called /edgetpud.v1.Models/List"
        thread.join(60)
        [exc] = failures
        assert exc.code == grpc.StatusCode.UNAVAILABLE
        assert exc.message.startswith(f"lost the connection to edgetpud at {silent.address} during the call")
        # the same client reports the daemon as unreachable afterwards, then works again once one is back
        with pytest.raises(ClientError) as info:
            client.status(timeout=5)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert info.value.message.startswith(f"cannot reach edgetpud at {silent.address}: is it running?")


def test_a_daemon_error_is_not_mistaken_for_a_lost_connection(daemon):
    with Client(daemon.address) as client:
        with pytest.raises(ClientError) as info:
            client.mock.unplug("mock:7")
        assert info.value.code == grpc.StatusCode.NOT_FOUND and "mock:7" in info.value.message
        assert client.status().ready


@pytest.mark.parametrize("options, message", [
    ({"top_k": 100000}, "top_k must be between 0"),
    ({"threshold": 2.0}, "threshold is a minimum score, between 0 and 1"),
    ({"threshold": -1.0}, "threshold is a minimum score, between 0 and 1"),
], ids=["top-k", "threshold-above-1", "threshold-negative"])
def test_the_daemon_refuses_out_of_range_result_options(daemon, test_data, options, message):
    """docs/api.md: out-of-range top_k or threshold is INVALID_ARGUMENT, whatever client sent it."""
    with Client(daemon.address, timeout=30) as client:
        with pytest.raises(ClientError) as info:
            client.classify(SMALL, (test_data / "cat.bmp").read_bytes(), **options)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.message


def test_the_cli_limit_on_top_k_is_the_daemons():
    from edgetpud.daemon.api.convert import MAX_TOP_K as daemon_limit
    from edgetpud.daemon.cli.argtypes import MAX_TOP_K as cli_limit

    assert cli_limit == daemon_limit

"""Listeners: unix socket ownership, no shared ports, TLS with client certificates."""
from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import grpc
import pytest

from daemon_fixture import FakeService, InProcessServer
from edgetpud.daemon.client import Client, ClientError
from edgetpud.daemon.config import Config
from edgetpud.daemon.errors import PreconditionError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_second_server_on_a_live_unix_socket_is_refused(tmp_path):
    sock = tmp_path / "edgetpud.sock"
    first = InProcessServer(FakeService(), Config(listen=[f"unix:{sock}"])).start()
    try:
        second = InProcessServer(FakeService(), Config(listen=[f"unix:{sock}"]))
        with pytest.raises(PreconditionError, match="another process"):
            second.start()
        second.stop()
        with Client(f"unix:{sock}", timeout=10) as client:
            assert client.status().ready  # the first daemon still owns its socket
    finally:
        first.stop()


def test_a_stale_socket_file_is_replaced(tmp_path):
    sock = tmp_path / "edgetpud.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(sock))  # a socket file nobody listens on, as after a crash
    leftover.close()
    server = InProcessServer(FakeService(), Config(listen=[f"unix:{sock}"])).start()
    try:
        with Client(f"unix:{sock}", timeout=10) as client:
            assert client.status().ready
    finally:
        server.stop()


def test_two_servers_never_share_a_tcp_port(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    first = InProcessServer(FakeService(), Config(listen=[address])).start()
    try:
        second = InProcessServer(FakeService(), Config(listen=[address]))
        with pytest.raises(PreconditionError, match="in use"):
            second.start()
        second.stop()
    finally:
        first.stop()


def test_an_unknown_socket_group_is_explained(tmp_path):
    server = InProcessServer(FakeService(), Config(listen=[f"unix:{tmp_path / 's.sock'}"],
                                                   socket_group="no-such-group-edgetpud"))
    with pytest.raises(PreconditionError, match="no-such-group-edgetpud"):
        server.start()
    server.stop()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=edgetpud test CA", cwd=d)
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        extra = ["-extfile", "server.ext"] if name == "server" else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", *extra, cwd=d)
    return d


def test_tls_with_client_certificates(pki):
    port = free_port()
    config = Config(listen=[f"127.0.0.1:{port}"], tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                    tls_client_ca=pki / "ca.pem")
    server = InProcessServer(FakeService(), config).start()
    try:
        with Client(f"localhost:{port}", timeout=10, tls_ca=pki / "ca.pem", tls_cert=pki / "client.pem",
                    tls_key=pki / "client.key") as client:
            assert client.status().ready
        with Client(f"localhost:{port}", timeout=10, tls_ca=pki / "ca.pem") as anonymous:
            with pytest.raises(ClientError) as info:
                anonymous.status()
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def test_fault_injection_against_a_daemon_on_real_devices_says_what_to_do(tmp_path):
    """Without --device mock the MockControl service is not served: gRPC alone would say "Method not found"."""
    import grpc

    service = FakeService()
    service.mock_control = None
    sock = tmp_path / "edgetpud.sock"
    server = InProcessServer(service, Config(listen=[f"unix:{sock}"])).start()
    try:
        with Client(f"unix:{sock}", timeout=10) as client:
            with pytest.raises(ClientError) as exc:
                client.mock.unplug("mock:0")
            assert exc.value.code == grpc.StatusCode.UNIMPLEMENTED
            assert "--device mock" in exc.value.message
            assert client.status().ready  # and the daemon serves on
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_listen_path_that_is_not_a_socket_is_left_alone(tmp_path, kind):
    """A typo'd --listen path that names a file must never delete the file."""
    target = tmp_path / "edgetpud.toml"
    if kind == "file":
        target.write_text("precious = 1\n")
    else:
        target.mkdir()
    server = InProcessServer(FakeService(), Config(listen=[f"unix:{target}"]))
    with pytest.raises(PreconditionError, match="not a socket") as info:
        server.start()
    server.stop()
    assert str(target) in str(info.value)
    if kind == "file":
        assert target.read_text() == "precious = 1\n"
    else:
        assert target.is_dir()


@pytest.mark.parametrize("cert,key,ca,message", [
    ("server.pem", "client.key", None, "does not match"),
    ("junk.pem", "server.key", None, "TLS certificate"),
    ("server.pem", "junk.pem", None, "TLS key"),
    ("server.pem", "server.key", "junk.pem", "client CA"),
])
def test_bad_tls_files_are_named_not_blamed_on_the_port(pki, cert, key, ca, message):
    """gRPC's own failure reads 'Failed to bind', which the daemon reported as the port being in use."""
    (pki / "junk.pem").write_text("not a PEM file\n")
    port = free_port()
    config = Config(listen=[f"127.0.0.1:{port}"], tls_cert=pki / cert, tls_key=pki / key,
                    tls_client_ca=pki / ca if ca else None)
    server = InProcessServer(FakeService(), config)
    with pytest.raises(PreconditionError) as info:
        server.start()
    server.stop()
    assert message in str(info.value)
    assert "in use" not in str(info.value)

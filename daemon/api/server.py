"""Put every servicer on every listener: ``build_server(service, config)``.

Listeners: unix sockets (mode and group from the config, so only members of the
group can talk to the TPUs) and TCP, with TLS when a certificate is configured
and client-certificate checking when a client CA is. Two daemons must never
share an address silently: TCP ports are bound without SO_REUSEPORT, and a unix
socket that another process still answers on is refused instead of replaced.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import ssl
import stat
from pathlib import Path
from typing import Any, List

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgetpud.daemon.config import Config
from edgetpud.daemon.errors import PreconditionError
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2 as pb
from edgetpud.protos.edgetpud.v1 import edgetpud_pb2_grpc as pb_grpc
from edgetpud.protos.kserve import grpc_predict_v2_pb2 as kserve_pb
from edgetpud.protos.kserve import grpc_predict_v2_pb2_grpc as kserve_grpc

from .facade import ServiceFacade
from .health import HealthServicer
from .inference import InferenceServicer, add_to_server as add_inference_to_server
from .kserve import KServeServicer
from .learning import LearningServicer
from .management import DaemonServicer, DevicesServicer, MockControlServicer, ModelsServicer

log = logging.getLogger(__name__)

UNIX_PREFIX = "unix:"


def service_names(mock: bool) -> List[str]:
    """Full names of the services served (what reflection lists)."""
    names = [pb.DESCRIPTOR.services_by_name[n].full_name
             for n in ("Inference", "Models", "Learning", "Devices", "Daemon")]
    if mock:
        names.append(pb.DESCRIPTOR.services_by_name["MockControl"].full_name)
    names.append(kserve_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name)
    return names


def server_options(config: Config) -> List[tuple]:
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", int(config.max_message_bytes)),
        ("grpc.max_send_message_length", int(config.max_message_bytes)),
    ]


def build_server(service: ServiceFacade, config: Config) -> grpc.aio.Server:
    """A grpc.aio server with every service registered and every listener bound (not started).

    Raises:
        PreconditionError: a listener cannot be bound (in use, no permission, bad TLS files,
            unknown socket group), with the address and what to do.
    """
    server = grpc.aio.server(options=server_options(config),
                             maximum_concurrent_rpcs=int(config.max_concurrent_requests))
    mock = service.mock_control is not None
    add_inference_to_server(InferenceServicer(service), server)  # image requests parsed without copies
    pb_grpc.add_ModelsServicer_to_server(ModelsServicer(service), server)
    pb_grpc.add_LearningServicer_to_server(LearningServicer(service), server)
    pb_grpc.add_DevicesServicer_to_server(DevicesServicer(service), server)
    pb_grpc.add_DaemonServicer_to_server(DaemonServicer(service), server)
    if mock:
        pb_grpc.add_MockControlServicer_to_server(MockControlServicer(service), server)
    kserve_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(service), server)
    names = service_names(mock)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(service, names), server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection([*names, health_name, reflection.SERVICE_NAME], server)
    for address in config.listen:
        if address.startswith(UNIX_PREFIX):
            bind_unix(server, address[len(UNIX_PREFIX):], config)
        else:
            bind_tcp(server, address, config)
    return server


def _add_port(server: grpc.aio.Server, address: str, credentials: Any = None) -> int:
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise PreconditionError(f"cannot listen on {address}: the address is in use or not available "
                                f"(is another edgetpud running?) [{str(exc).splitlines()[0]}]") from None
    if not port:
        raise PreconditionError(f"cannot listen on {address}: the address is in use or not available")
    return port


def _answers(path: Path) -> bool:
    """Whether a process accepts connections on the unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()


def bind_unix(server: grpc.aio.Server, path_text: str, config: Config) -> None:
    """Bind a unix socket, then set its mode and group.

    Raises:
        PreconditionError: another process serves on the path, the folder cannot be
            created, or the mode or group cannot be applied.
    """
    path = Path(path_text)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise PreconditionError(f"cannot listen on unix:{path}: {exc.strerror}") from None
    if mode is not None and not stat.S_ISSOCK(mode):
        # A typo'd path must never cost the operator the file it names.
        raise PreconditionError(f"cannot listen on unix:{path}: it exists and is not a socket; "
                                "choose another --listen path (it is left as it is)")
    if mode is not None:
        if _answers(path):
            raise PreconditionError(f"cannot listen on unix:{path}: another process (another edgetpud?) "
                                    "is serving on it; stop it or choose another --listen path")
        log.info("removing stale socket %s", path)
        path.unlink()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreconditionError(f"cannot create the socket folder {path.parent}: {exc.strerror}") from None
    _add_port(server, f"{UNIX_PREFIX}{path}")
    try:
        os.chmod(path, config.socket_mode)
        if config.socket_group:
            shutil.chown(path, group=config.socket_group)
    except LookupError:
        raise PreconditionError(f"socket_group '{config.socket_group}' does not exist: create it "
                                "(systemd-sysusers does) or change socket_group") from None
    except OSError as exc:
        raise PreconditionError(f"cannot set mode/group of {path}: {exc.strerror}; the daemon needs to own "
                                "the socket or be a member of socket_group") from None
    log.info("listening on unix:%s (mode %o, group %s)", path, config.socket_mode, config.socket_group or "-")


def _read(path: Any, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PreconditionError(f"cannot read the {what} {path}: {exc.strerror}") from None


def tls_credentials(config: Config) -> grpc.ServerCredentials:
    """Server credentials; with ``tls_client_ca`` clients must present a certificate it signed.

    Raises:
        PreconditionError: a certificate, key or CA file cannot be read.
    """
    key = _read(config.tls_key, "TLS key")
    cert = _read(config.tls_cert, "TLS certificate")
    client_ca = _read(config.tls_client_ca, "client CA") if config.tls_client_ca else None
    check_tls_files(config)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def _no_passphrase() -> bytes:
    """Answers OpenSSL's passphrase prompt (which would otherwise wait on the terminal) with nothing."""
    return b""


def check_tls_files(config: Config) -> None:
    """Parse the certificate, key and client CA the way the TLS listener will, naming the bad file.

    gRPC reports any of these problems only as a failure to bind the port, which reads as
    "address in use".

    Raises:
        PreconditionError: a file holds no PEM certificate or key, the key is encrypted, or
            the key does not belong to the certificate.
    """
    cert, key = str(config.tls_cert), str(config.tls_key)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert)
    except (ssl.SSLError, ValueError):
        raise PreconditionError(f"the TLS certificate {cert} holds no PEM certificate (tls_cert)") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=_no_passphrase)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or getattr(exc, "reason", "") == "KEY_VALUES_MISMATCH":
            raise PreconditionError(f"the TLS key {key} does not match the certificate {cert} "
                                    "(tls_key and tls_cert must be one pair)") from None
        raise PreconditionError(f"the TLS key {key} is not an unencrypted PEM private key (tls_key): "
                                f"{getattr(exc, 'reason', None) or exc}") from None
    if config.tls_client_ca:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(config.tls_client_ca))
        except (ssl.SSLError, ValueError):
            raise PreconditionError(f"the client CA {config.tls_client_ca} holds no PEM certificate "
                                    "(tls_client_ca)") from None


def bind_tcp(server: grpc.aio.Server, address: str, config: Config) -> int:
    """Bind HOST:PORT, with TLS when configured; returns the bound port (useful with port 0).

    Raises:
        PreconditionError: the port is in use or the TLS files cannot be read.
    """
    if config.tls_cert:
        port = _add_port(server, address, tls_credentials(config))
        log.info("listening on %s (TLS%s)", address, ", client certificates required" if config.tls_client_ca else "")
    else:
        port = _add_port(server, address)
        log.warning("listening on %s WITHOUT TLS: anyone who can reach the port can use the TPUs", address)
    return port

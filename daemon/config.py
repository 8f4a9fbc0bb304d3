"""The daemon's configuration: one frozen value built from a TOML file plus command-line overrides.

Every key is checked by name and type, so a typo in ``edgetpud.toml`` stops the
daemon with the key's name instead of being ignored.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from .errors import EdgetpudError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/edgetpud/edgetpud.toml")
DEFAULT_SOCKET = "unix:/run/edgetpud/edgetpud.sock"
#: A 1080p RGBA raw frame plus room for the rest of the message.
MIN_MESSAGE_BYTES = 1920 * 1080 * 4 + 64 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: gRPC takes message sizes and the concurrency limit as C ints: larger values crash the server's construction.
MAX_GRPC_INT = 2**31 - 1
#: sockaddr_un holds 108 bytes, the last one the terminating NUL.
MAX_UNIX_PATH_BYTES = 107


class ConfigError(EdgetpudError, ValueError):
    """The configuration file or an override is missing, malformed or out of range."""


@dataclass(frozen=True)
class Config:
    """Everything the daemon reads at start; SIGHUP builds a new one."""

    devices: List[str] = field(default_factory=lambda: ["auto"])
    models_dir: Path = Path("/var/lib/edgetpud/models")
    state_dir: Path = Path("/var/lib/edgetpud/state")
    listen: List[str] = field(default_factory=lambda: [DEFAULT_SOCKET])
    #: Frigate's zmq detector endpoints, ``ipc:///PATH`` each (daemon/frigate/; needs pyzmq).
    zmq_listen: List[str] = field(default_factory=list)
    #: How long a Frigate frame may wait (Frigate's request_timeout_ms): one still queued then is not run.
    zmq_timeout_s: float = 0.2
    socket_mode: int = 0o660
    socket_group: Optional[str] = None
    tls_cert: Optional[Path] = None
    tls_key: Optional[Path] = None
    tls_client_ca: Optional[Path] = None
    max_message_bytes: int = 16 * 1024 * 1024
    max_concurrent_requests: int = 64
    queue_depth: int = 16
    metrics_listen: Optional[str] = None
    grace_s: float = 10.0
    mock_latency_s: Optional[float] = None
    log_level: str = "info"
    #: The device pool (edgetpud.hal.PoolOptions): in-flight invocations per device, monitor periods,
    #: hang and start timeouts, restart backoff, a pre-started spare worker, interpreter threads.
    device_slots: int = 4
    device_poll_s: float = 1.0
    device_rescan_s: float = 2.0
    device_start_timeout_s: float = 60.0
    invoke_timeout_s: float = 30.0
    restart_backoff_s: List[float] = field(default_factory=lambda: [0.05, 10.0])
    restart_stable_s: float = 60.0
    warm_spare: bool = False
    cpu_threads: Optional[int] = None
    #: Firmware the daemon pushes to a USB accelerator in DFU mode (None: libedgetpu loads its own).
    usb_firmware: Optional[Path] = None
    #: Samples (embeddings and image bytes) kept per model for retraining.
    learn_max_bytes_per_model: int = 256 * 1024 * 1024
    #: KServe sequences (Triton's sequence_id) carrying a recurrent model's state: how many may be
    #: live at once, and how long one is kept without a request.
    sequence_limit: int = 1024
    sequence_idle_s: float = 60.0

    def replace(self, **changes: Any) -> "Config":
        """A validated copy with ``changes`` applied.

        Raises:
            ConfigError: a changed value is invalid.
        """
        return build_config({**self.to_dict(), **changes}, source="override")

    def to_dict(self) -> Dict[str, Any]:
        """Plain values (paths as str) for logs and status output."""
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else (list(value) if isinstance(value, list) else value)
        return out


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_PATH_KEYS = {"models_dir", "state_dir", "tls_cert", "tls_key", "tls_client_ca", "usb_firmware"}
_LIST_KEYS = {"devices", "listen"}
_OPTIONAL = {"socket_group", "tls_cert", "tls_key", "tls_client_ca", "metrics_listen", "mock_latency_s",
             "cpu_threads", "usb_firmware"}
#: Seconds that must be > 0 (a zero period or timeout would spin or kill every worker at once).
_POSITIVE_SECONDS = {"device_poll_s", "device_rescan_s", "device_start_timeout_s", "invoke_timeout_s",
                     "sequence_idle_s", "zmq_timeout_s"}


def _coerce(key: str, value: Any, source: str) -> Any:
    """Turn one raw value into the field's type, or explain what was expected."""
    where = f"{source}: '{key}'"
    texts = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, (str, Path)) and "\0" in str(v) for v in texts):
        raise ConfigError(f"{where} contains a NUL character (\\u0000), which no name or path can hold")
    if value is None:
        if key in _OPTIONAL:
            return None
        raise ConfigError(f"{where} must be set")
    if key == "zmq_listen":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of ipc:///PATH strings, got {value!r}")
        return list(value)
    if key in _LIST_KEYS:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where} must be a non-empty list of strings, got {value!r}")
        return list(value)
    if key in _PATH_KEYS:
        if not isinstance(value, (str, Path)) or not str(value):
            raise ConfigError(f"{where} must be a path, got {value!r}")
        return Path(value)
    if key == "socket_mode":
        if isinstance(value, str):
            try:
                value = int(value, 8)
            except ValueError:
                raise ConfigError(f"{where} must be an octal mode such as \"0660\", got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
            hint = f' (a TOML integer is decimal: write "0{value}" or 0o{value})' if (
                isinstance(value, int) and not isinstance(value, bool) and set(str(value)) <= set("01234567")) else ""
            raise ConfigError(f"{where} must be a file mode between 0 and 0777, got {value!r}{hint}")
        return value
    if key == "warm_spare":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if key == "restart_backoff_s":
        return _backoff(value, where)
    if key in ("device_slots", "cpu_threads"):
        least = 2 if key == "device_slots" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where} must be an integer >= {least}, got {value!r}")
        return value
    if key in _POSITIVE_SECONDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where} must be a finite number of seconds > 0, got {value!r}")
        return float(value)
    if key in ("max_message_bytes", "max_concurrent_requests", "queue_depth", "learn_max_bytes_per_model",
               "sequence_limit"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where} must be a positive integer, got {value!r}")
        if key == "max_message_bytes" and value < MIN_MESSAGE_BYTES:
            raise ConfigError(f"{where} must be at least {MIN_MESSAGE_BYTES} (a 1080p RGBA frame), got {value}")
        if key in ("max_message_bytes", "max_concurrent_requests") and value > MAX_GRPC_INT:
            raise ConfigError(f"{where} must be at most {MAX_GRPC_INT} (gRPC's limit), got {value}")
        return value
    if key in ("grace_s", "mock_latency_s", "restart_stable_s"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where} must be a finite number of seconds >= 0, got {value!r}")
        return float(value)
    if key == "log_level":
        if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
            raise ConfigError(f"{where} must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return value.lower()
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _backoff(value: Any, where: str) -> List[float]:
    """``[first, longest]``: the delay before a restart, doubling up to ``longest`` while workers keep dying."""
    numbers = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not numbers or not 0 <= value[0] <= value[1]:
        raise ConfigError(f"{where} must be [first, longest] seconds with 0 <= first <= longest, got {value!r}")
    return [float(value[0]), float(value[1])]


def _check_listen(address: str, source: str) -> None:
    if address.startswith("unix:"):
        path = address[len("unix:"):]
        if not path:
            raise ConfigError(f"{source}: 'listen' address {address!r} has no socket path")
        if len(path.encode()) > MAX_UNIX_PATH_BYTES:
            raise ConfigError(f"{source}: 'listen' socket path {path!r} is {len(path.encode())} bytes long; "
                              f"a unix socket path can have at most {MAX_UNIX_PATH_BYTES}")
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{source}: 'listen' address {address!r} must be unix:PATH or HOST:PORT (port 1-65535)")


def _check_zmq_listen(config: Config, source: str) -> None:
    """Each Frigate endpoint is ``ipc:///absolute/path``, once, and not one of the gRPC sockets."""
    grpc_paths = {a[len("unix:"):] for a in config.listen if a.startswith("unix:")}
    for address in config.zmq_listen:
        path = address[len("ipc://"):] if address.startswith("ipc://") else ""
        if not path.startswith("/"):
            raise ConfigError(f"{source}: 'zmq_listen' address {address!r} must be ipc:///ABSOLUTE/PATH "
                              "(Frigate's zmq detector endpoint, e.g. ipc:///run/edgetpud/frigate.ipc)")
        if len(path.encode()) > MAX_UNIX_PATH_BYTES:
            raise ConfigError(f"{source}: 'zmq_listen' socket path {path!r} is {len(path.encode())} bytes long; "
                              f"an ipc socket path can have at most {MAX_UNIX_PATH_BYTES}")
        if path in grpc_paths:
            raise ConfigError(f"{source}: 'zmq_listen' {address!r} is also a gRPC 'listen' socket; give each its own")
    repeated = sorted({a for a in config.zmq_listen if config.zmq_listen.count(a) > 1})
    if repeated:
        raise ConfigError(f"{source}: 'zmq_listen' names {', '.join(repeated)} twice; give each address once")


def _check_devices(devices: List[str], source: str) -> None:
    """Parse the specs now, so a typo is refused by name at start and on SIGHUP alike."""
    from edgetpud.hal.discovery import parse_specs
    from edgetpud.hal.errors import DeviceSpecError

    try:
        parse_specs(devices)
    except DeviceSpecError as exc:
        raise ConfigError(f"{source}: 'devices': {exc}") from None


def build_config(values: Mapping[str, Any], source: str = "config") -> Config:
    """Validate a flat mapping of keys to raw values and return a Config.

    Raises:
        ConfigError: an unknown key (named), a wrongly typed value, or an inconsistent set.
    """
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                          f"known keys are {', '.join(sorted(_FIELDS))}")
    kwargs = {key: _coerce(key, value, source) for key, value in values.items()}
    config = Config(**kwargs)
    _check_devices(config.devices, source)
    for address in config.listen:
        _check_listen(address, source)
    repeated = sorted({a for a in config.listen if config.listen.count(a) > 1})
    if repeated:
        raise ConfigError(f"{source}: 'listen' names {', '.join(repeated)} twice; give each address once")
    _check_zmq_listen(config, source)
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError(f"{source}: 'tls_cert' and 'tls_key' must be given together")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ConfigError(f"{source}: 'tls_client_ca' needs 'tls_cert' and 'tls_key'")
    if config.usb_firmware is not None and not config.usb_firmware.is_file():
        raise ConfigError(f"{source}: 'usb_firmware' {str(config.usb_firmware)!r} is not a file")
    if config.metrics_listen is not None:
        host, sep, port = config.metrics_listen.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"{source}: 'metrics_listen' must be HOST:PORT with a port of 0-65535, "
                              f"got {config.metrics_listen!r}")
    return config


def read_config_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Parse one TOML file into a flat mapping.

    Keys may sit at the top level, in an ``[edgetpud]`` table, or both (a key given in
    both places is an error); any other table is reported as an unknown key.

    Raises:
        ConfigError: the file is unreadable, not UTF-8, not valid TOML, or gives a key twice.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: not UTF-8 text (byte {exc.start})") from None
    table = data.get("edgetpud")
    if isinstance(table, dict):
        data = {k: v for k, v in data.items() if k != "edgetpud"}
        both = sorted(set(data) & set(table))
        if both:
            raise ConfigError(f"{path}: {', '.join(repr(k) for k in both)} given both at the top level and in "
                              "[edgetpud]; keep one")
        data.update(table)
    return data


def load_config(path: Union[str, Path, None] = None, overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """Read ``path`` (or the default file if it exists), then apply command-line ``overrides``.

    A missing default file means built-in defaults; a missing file named explicitly is an error.
    Overrides whose value is None are ignored (the option was not given).

    Raises:
        ConfigError: the file is missing (when named), malformed, or a value is invalid.
    """
    values: Dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        values = read_config_file(path)
        source = str(path)
    elif DEFAULT_CONFIG_PATH.is_file():
        values = read_config_file(DEFAULT_CONFIG_PATH)
        source = str(DEFAULT_CONFIG_PATH)
    config = build_config(values, source=source)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if given:
        unknown = sorted(set(given) - set(_FIELDS))
        if unknown:
            raise ConfigError(f"command line: unknown override(s) {', '.join(unknown)}")
        config = build_config({**values, **given}, source="command line")
    log.debug("configuration from %s: %s", source, config.to_dict())
    return config

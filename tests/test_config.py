"""Configuration: TOML file, command-line overrides, and errors that name the bad key."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from edgetpud.daemon import config as config_mod
from edgetpud.daemon.config import Config, ConfigError, build_config, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgetpud.toml"
    path.write_text(text)
    return path


def test_defaults_when_default_file_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(config_mod, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    config = load_config()
    assert config == Config()
    assert config.listen == ["unix:/run/edgetpud/edgetpud.sock"]
    assert config.socket_mode == 0o660
    assert config.max_message_bytes >= 1920 * 1080 * 4
    assert config.metrics_listen is None


def test_default_file_is_read_when_present(tmp_path, monkeypatch):
    path = write(tmp_path, 'queue_depth = 3\n')
    monkeypatch.setattr(config_mod, "DEFAULT_CONFIG_PATH", path)
    assert load_config().queue_depth == 3


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_file_values_and_types(tmp_path):
    path = write(tmp_path, """
devices = ["mock:2"]
models_dir = "/srv/models"
listen = ["unix:/tmp/x.sock", "127.0.0.1:50051"]
socket_mode = "0600"
socket_group = "video"
grace_s = 2
mock_latency_s = 0.004
log_level = "DEBUG"
metrics_listen = "127.0.0.1:9100"
""")
    config = load_config(path)
    assert config.devices == ["mock:2"]
    assert config.models_dir == Path("/srv/models")
    assert config.listen == ["unix:/tmp/x.sock", "127.0.0.1:50051"]
    assert config.socket_mode == 0o600
    assert config.socket_group == "video"
    assert config.grace_s == 2.0 and isinstance(config.grace_s, float)
    assert config.mock_latency_s == pytest.approx(0.004)
    assert config.log_level == "debug"
    assert config.metrics_listen == "127.0.0.1:9100"


def test_edgetpud_table_is_accepted(tmp_path):
    path = write(tmp_path, '[edgetpud]\nqueue_depth = 5\n')
    assert load_config(path).queue_depth == 5


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, 'queue_dept = 5\n')
    with pytest.raises(ConfigError, match="'queue_dept'"):
        load_config(path)


def test_bad_toml_is_reported_with_the_file(tmp_path):
    path = write(tmp_path, 'queue_depth = = 5\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


@pytest.mark.parametrize("key,value,message", [
    ("queue_depth", 0, "positive integer"),
    ("queue_depth", "4", "positive integer"),
    ("max_message_bytes", 1024, "1080p"),
    ("socket_mode", "rw", "octal"),
    ("grace_s", -1, "seconds"),
    ("log_level", "loud", "one of"),
    ("listen", ["localhost"], "unix:PATH or HOST:PORT"),
    ("listen", [], "non-empty list"),
    ("devices", [3], "non-empty list"),
    ("metrics_listen", "9100", "HOST:PORT"),
    ("learn_max_bytes_per_model", 0, "positive integer"),
    ("learn_max_bytes_per_model", 1.5, "positive integer"),
])
def test_invalid_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_config({key: value})
    assert key in str(info.value) or "listen address" in str(info.value)


def test_tls_needs_cert_and_key():
    with pytest.raises(ConfigError, match="together"):
        build_config({"tls_cert": "/a.pem"})
    with pytest.raises(ConfigError, match="tls_client_ca"):
        build_config({"tls_client_ca": "/ca.pem"})
    config = build_config({"tls_cert": "/a.pem", "tls_key": "/k.pem", "tls_client_ca": "/ca.pem"})
    assert config.tls_client_ca == Path("/ca.pem")


def test_overrides_win_and_none_means_not_given(tmp_path):
    path = write(tmp_path, 'devices = ["cpu"]\nqueue_depth = 4\n')
    config = load_config(path, {"devices": ["mock:1"], "queue_depth": None, "mock_latency_s": 0.01})
    assert config.devices == ["mock:1"]
    assert config.queue_depth == 4
    assert config.mock_latency_s == pytest.approx(0.01)


def test_bad_override_is_reported_as_command_line():
    with pytest.raises(ConfigError, match="command line"):
        load_config(Path("/dev/null"), {"queue_depth": -2})


def test_config_is_frozen_and_replace_validates():
    config = Config()
    with pytest.raises(Exception):
        config.queue_depth = 2  # type: ignore[misc]
    assert config.replace(queue_depth=2).queue_depth == 2
    with pytest.raises(ConfigError):
        config.replace(queue_depth=0)


def test_the_documented_example_is_valid():
    example = Path(__file__).resolve().parents[1] / "systemd" / "edgetpud.toml.example"
    config = load_config(example)
    assert config.socket_group == "edgetpu"
    assert config.listen == ["unix:/run/edgetpud/edgetpud.sock"]


@pytest.mark.parametrize("text,names", [
    ("grace_s = nan\n", ["grace_s", "nan"]),
    ("grace_s = inf\n", ["grace_s", "inf"]),
    ("mock_latency_s = inf\n", ["mock_latency_s"]),
    ("max_message_bytes = 1000000000000\n", ["max_message_bytes", "2147483647"]),
    ("max_concurrent_requests = 1000000000000\n", ["max_concurrent_requests"]),
    ('metrics_listen = "127.0.0.1:99999"\n', ["metrics_listen", "99999"]),
    ('devices = ["gpu"]\n', ["devices", "gpu", "mock[:N]"]),
    ('listen = ["unix:/tmp/' + "x" * 120 + '.sock"]\n', ["listen", "107"]),
    ('listen = ["unix:/tmp/a.sock", "unix:/tmp/a.sock"]\n', ["listen", "twice"]),
])
def test_values_that_cannot_work_are_refused_with_file_and_key(tmp_path, text, names):
    """Each of these used to pass validation and then crash or hang the daemon at start."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for name in names:
        assert name in message


def test_a_non_utf8_file_is_a_config_error(tmp_path):
    path = tmp_path / "edgetpud.toml"
    path.write_bytes(b"\xff\xfequeue_depth = 3\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


def test_a_config_folder_instead_of_a_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_edgetpud_table_with_top_level_keys_and_another_table(tmp_path):
    """The [edgetpud] table is documented as accepted: it is never the key reported unknown."""
    path = write(tmp_path, 'queue_depth = 3\n[edgetpud]\ngrace_s = 1\n')
    config = load_config(path)
    assert (config.queue_depth, config.grace_s) == (3, 1.0)
    typo = write(tmp_path, '[edgetpud]\ngrace_s = 1\n[edgetpd]\nqueue_depth = 2\n')
    with pytest.raises(ConfigError) as info:
        load_config(typo)
    assert "'edgetpd'" in str(info.value) and "'edgetpud'" not in str(info.value).split(";")[0]
    twice = write(tmp_path, 'grace_s = 2\n[edgetpud]\ngrace_s = 1\n')
    with pytest.raises(ConfigError, match="grace_s"):
        load_config(twice)


def test_a_decimal_socket_mode_gets_a_hint(tmp_path):
    path = write(tmp_path, "socket_mode = 660\n")
    with pytest.raises(ConfigError, match='"0660"'):
        load_config(path)


@pytest.mark.parametrize("key,value", [("socket_group", "edge\0tpu"), ("listen", ["unix:/tmp/a\0b.sock"]),
                                       ("models_dir", "/srv/\0models"), ("metrics_listen", "127.0.0.1\0:9464")])
def test_a_nul_character_is_refused_by_key(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'.*NUL"):
        build_config({key: value})


def test_device_pool_keys_are_read(tmp_path):
    firmware = tmp_path / "apex_latest_single_ep.bin"
    firmware.write_bytes(b"\x7fELF")
    path = write(tmp_path, f"""
device_slots = 3
device_poll_s = 0.5
device_rescan_s = 4
device_start_timeout_s = 20
invoke_timeout_s = 5
restart_backoff_s = [0.1, 30]
restart_stable_s = 0
warm_spare = true
cpu_threads = 2
usb_firmware = "{firmware}"
""")
    config = load_config(path)
    assert (config.device_slots, config.device_poll_s, config.device_rescan_s) == (3, 0.5, 4.0)
    assert (config.device_start_timeout_s, config.invoke_timeout_s) == (20.0, 5.0)
    assert config.restart_backoff_s == [0.1, 30.0] and config.restart_stable_s == 0.0
    assert config.warm_spare is True and config.cpu_threads == 2 and config.usb_firmware == firmware
    defaults = Config()
    assert (defaults.warm_spare, defaults.usb_firmware, defaults.invoke_timeout_s) == (False, None, 30.0)
    assert defaults.restart_backoff_s == [0.05, 10.0]


@pytest.mark.parametrize("key,value,message", [
    ("device_slots", 1, "integer >= 2"),
    ("device_slots", 2.5, "integer >= 2"),
    ("cpu_threads", 0, "integer >= 1"),
    ("device_poll_s", 0, "seconds > 0"),
    ("device_rescan_s", float("inf"), "seconds > 0"),
    ("device_start_timeout_s", -1, "seconds > 0"),
    ("invoke_timeout_s", True, "seconds > 0"),
    ("restart_backoff_s", [10, 1], "first <= longest"),
    ("restart_backoff_s", [1], r"\[first, longest\]"),
    ("restart_backoff_s", "1s", r"\[first, longest\]"),
    ("restart_stable_s", -1, "seconds"),
    ("warm_spare", "yes", "true or false"),
    ("usb_firmware", "/nonexistent/apex.bin", "not a file"),
])
def test_invalid_device_pool_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_config({key: value})
    assert key in str(info.value)


def test_the_service_builds_its_pool_from_the_keys(tmp_path):
    from edgetpud.daemon.service import MOCK_STATE_FOLDER, Service

    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x7fELF")
    config = build_config({"devices": ["mock:2"], "state_dir": str(tmp_path), "mock_latency_s": 0.25,
                           "device_slots": 3, "device_poll_s": 0.5, "device_rescan_s": 4,
                           "device_start_timeout_s": 20, "invoke_timeout_s": 5, "restart_backoff_s": [0.1, 30],
                           "restart_stable_s": 7, "warm_spare": True, "cpu_threads": 2})
    async def service(c: Any) -> Service:  # the daemon builds its Service on its running loop
        return Service(c)

    options = asyncio.run(service(config)).pool.options
    assert (options.slots, options.poll_interval_s, options.rescan_interval_s) == (3, 0.5, 4.0)
    assert (options.start_timeout_s, options.invoke_timeout_s, options.backoff_s) == (20.0, 5.0, (0.1, 30.0))
    assert (options.stable_s, options.warm_spare, options.num_threads) == (7.0, True, 2)
    mock = asyncio.run(service(config)).pool.backend("mock")
    assert mock.latency_s == 0.25 and mock.state_dir == str(tmp_path / MOCK_STATE_FOLDER)
    usb = asyncio.run(service(config.replace(devices=["usb"], usb_firmware=str(firmware)))).pool.backend("usb")
    assert usb.firmware == firmware

"""``edgetpud``: the daemon's entry point and process life.

Order matters: the device workers are spawned (Service.start) before the gRPC
server exists, so no gRPC thread is ever forked. READY=1 goes to systemd only
once devices, models and listeners are up. SIGTERM drains accepted requests
within ``grace_s`` before the workers stop; SIGHUP re-reads the configuration
and rescans the models folder.

Workers that restart later (or a warm spare) are spawned while gRPC runs. Spawn
forks only to exec, so gRPC's fork handlers are switched off before gRPC loads:
on Python 3.9, whose subprocess uses fork() rather than vfork(), they run in the
child and corrupt the parent's shared epoll set ("epoll_wait error: Bad file
descriptor", then an abort).
"""
from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import ctypes
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .config import LOG_LEVELS, Config, ConfigError, load_config
from edgetpud.hal.errors import HalError

from .errors import EdgetpudError
from .notify import Notifier
from .preflight import preflight_listeners

log = logging.getLogger("edgetpud.daemon.main")  # the same name under `python -m`

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
#: glibc mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: After SIGTERM, how long at least the listeners keep answering new requests UNAVAILABLE before the
#: gRPC server stops (within grace_s): a server that stops cancels calls it has read but not handled.
LAME_DUCK_S = 0.25

_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class OneLineFormatter(logging.Formatter):
    """One line per event (tracebacks folded), with a syslog priority prefix under journald."""

    def __init__(self, journald: bool) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s" if journald else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        super().__init__(fmt)
        self._journald = journald

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        if self._journald:
            level = max((lvl for lvl in _SYSLOG_PRIORITY if lvl <= record.levelno), default=logging.DEBUG)
            return f"<{_SYSLOG_PRIORITY[level]}>{text}"
        return text


def stderr_is_journal(environ: Any = os.environ) -> bool:
    """Whether stderr is the journald stream systemd connected (its device:inode is $JOURNAL_STREAM).

    The variable alone is not enough: it is inherited by whatever a service starts, and by
    the shells of some desktop sessions, whose stderr is a terminal or a file.
    """
    value = environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def setup_logging(level: str) -> None:
    """Log to stderr (journald keeps it under systemd)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(journald=stderr_is_journal()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="edgetpud", description="Serve Coral Edge TPUs over gRPC.",
        epilog="Options override the configuration file (default /etc/edgetpud/edgetpud.toml).")
    parser.add_argument("--config", metavar="FILE", type=Path, help="TOML configuration file")
    parser.add_argument("--device", action="append", metavar="SPEC",
                        help="auto, mock[:N], cpu, usb[:N] or pci[:N]; repeatable")
    parser.add_argument("--models", metavar="DIR", type=Path, help="folder of model bundles")
    parser.add_argument("--state-dir", metavar="DIR", type=Path, help="where uploaded models are kept")
    parser.add_argument("--listen", action="append", metavar="ADDR", help="unix:PATH or HOST:PORT; repeatable")
    parser.add_argument("--zmq-listen", action="append", metavar="ipc:///PATH",
                        help="serve Frigate's zmq detector here (needs pyzmq); repeatable")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT", help="serve Prometheus metrics here")
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower)
    parser.add_argument("--mock-latency-ms", type=float, metavar="MS", help="simulated invoke time of mock devices")
    return parser.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> Dict[str, Any]:
    """Command-line options as config keys (None: not given, the file decides)."""
    return {
        "devices": args.device, "models_dir": args.models, "state_dir": args.state_dir, "listen": args.listen,
        "zmq_listen": args.zmq_listen,
        "metrics_listen": args.metrics_listen, "log_level": args.log_level,
        "mock_latency_s": None if args.mock_latency_ms is None else args.mock_latency_ms / 1000.0,
    }


def _build_server(service: Any, config: Config) -> Any:
    """The gRPC server (daemon/api/server.py), or None when the API layer is not installed."""
    try:
        from edgetpud.daemon.api.server import build_server
    except ImportError as exc:
        log.warning("gRPC API not available (%s): running the service without listeners", exc)
        return None
    return build_server(service, config)


def _describe(exc: BaseException) -> str:
    """An unexpected exception in one line: its type (what a bug report needs) and its message."""
    text = str(exc).strip().replace("\n", " | ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _status_line(service: Any) -> str:
    from edgetpud.hal.device import DeviceState

    status = service.status()
    devices = [d for d in status["devices"] if DeviceState(d["state"]).in_service]
    models = [m for m in status["models"] if m["state"] == "ready"]
    failed = [m["name"] for m in status["models"] if m["state"] == "failed"]
    text = f"serving {len(models)} model(s) on {len(devices)}/{len(status['devices'])} device(s)"
    return text + (f"; failed: {', '.join(failed)}" if failed else "")


class Daemon:
    """The asyncio life of one daemon process."""

    def __init__(self, config: Config, config_path: Optional[Path], overrides: Dict[str, Any]) -> None:
        self.config = config
        self._config_path = config_path
        self._overrides = overrides
        self._notifier = Notifier()

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT (reloading on SIGHUP), then drain and stop: the exit code."""
        loop = asyncio.get_running_loop()
        self._install_signal_handlers(loop)
        taken = preflight_listeners(self.config)
        if taken:
            log.critical("cannot start: %s", taken)
            self._notifier.stopping(f"failed: {taken}")
            return EXIT_FAILURE
        service = self._create_service()
        if isinstance(service, int):
            return service
        # Pings start with the loop (systemd counts WatchdogSec from the start, and a start
        # that loads firmware and many models can take longer than it).
        self._serving = False
        watchdog = asyncio.ensure_future(self._notifier.watchdog_loop(lambda: not self._serving or service.healthy()))
        code = await self._start(service, watchdog)
        if code is not None:
            return code
        self._serving = True
        self._announce_ready(service)
        try:
            await self._serve_until_stopped(service)
        finally:
            watchdog.cancel()
        await self._drain_and_stop(loop, service)
        return EXIT_OK

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGTERM and SIGINT stop, SIGHUP reloads.

        The events are made here, on the running loop: Python 3.9's Event binds to the loop current
        when it is made, and one made before asyncio.run() fails every wait() with "attached to a
        different loop".
        """
        self._stop = asyncio.Event()
        self._hup = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._hup.set)

    def _create_service(self) -> Any:
        """The Service (which finds the devices), or the exit code when the configuration cannot make one."""
        from .service import Service

        self._notifier.status("starting devices")
        try:
            return Service(self.config)
        except (EdgetpudError, HalError, ValueError) as exc:
            log.critical("cannot start: %s", exc)
            return EXIT_USAGE
        except Exception as exc:  # noqa: BLE001 - one line and an exit code, not a traceback
            log.critical("cannot start: %s", _describe(exc))
            return EXIT_FAILURE

    async def _start(self, service: Any, watchdog: "asyncio.Future[Any]") -> Optional[int]:
        """Start the service, then the gRPC server; the exit code when the daemon must not serve, else None."""
        self._server = None
        self._frigate: Any = None
        try:
            if await self._start_unless_stopped(service):
                self._server = _build_server(service, self.config)
                if self._server is not None:
                    await self._server.start()
                if self.config.zmq_listen:
                    from .frigate import build_frigate_server

                    self._frigate = build_frigate_server(service, self.config)
                    self._frigate.start()
        except Exception as exc:  # noqa: BLE001 - whatever failed, the workers must be stopped or the process hangs
            expected = isinstance(exc, (EdgetpudError, HalError, OSError))
            message = str(exc) if expected else _describe(exc)
            log.critical("cannot start: %s", message)
            watchdog.cancel()
            self._notifier.stopping(f"failed: {message}")
            await service.stop(0)
            return EXIT_FAILURE
        if self._stop.is_set():  # SIGTERM/SIGINT before READY: never report ready, just stop
            log.info("stopping during start-up, before serving")
            watchdog.cancel()
            self._notifier.stopping("stopped during start-up")
            if self._frigate is not None:
                await self._frigate.stop(0)
            if self._server is not None:
                await self._server.stop(0)
            await service.stop(0)
            log.info("stopped")
            return EXIT_OK
        return None

    def _announce_ready(self, service: Any) -> None:
        """READY=1 to systemd, and the same line to the log."""
        listening = ", ".join(self.config.listen) if self._server is not None else "no listener"
        if self._frigate is not None:
            listening += "; frigate " + ", ".join(self.config.zmq_listen)
        status_line = _status_line(service)
        log.info("ready: %s; %s", listening, status_line)
        self._notifier.ready(status_line)

    async def _serve_until_stopped(self, service: Any) -> None:
        """Wait for SIGTERM/SIGINT, reloading on every SIGHUP meanwhile."""
        while not self._stop.is_set():
            hup = asyncio.ensure_future(self._hup.wait())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({hup, stop}, return_when=asyncio.FIRST_COMPLETED)
            hup.cancel()
            stop.cancel()
            if self._hup.is_set() and not self._stop.is_set():
                self._hup.clear()
                await self._reload(service)

    async def _drain_and_stop(self, loop: asyncio.AbstractEventLoop, service: Any) -> None:
        """Finish the accepted requests within ``grace_s``, then stop the server and the workers.

        Lame duck first: the listeners stay up and new requests are answered UNAVAILABLE (health
        NOT_SERVING) while the accepted ones finish, for at least LAME_DUCK_S so that calls already
        on the wire are answered too. Only then does the gRPC server stop.
        """
        grace = self.config.grace_s
        log.info("stopping: draining requests for up to %.1f s", grace)
        self._notifier.stopping("draining requests")
        began = loop.time()
        deadline = began + grace
        await service.drain(grace)
        await asyncio.sleep(max(0.0, min(deadline, began + LAME_DUCK_S) - loop.time()))
        if self._frigate is not None:
            await self._frigate.stop(max(0.0, deadline - loop.time()))
        if self._server is not None:
            await self._server.stop(max(0.0, deadline - loop.time()))  # waits for RPCs still running (streams)
        await service.stop(max(0.0, deadline - loop.time()))
        log.info("stopped")

    async def _start_unless_stopped(self, service: Any) -> bool:
        """Start the service; a SIGTERM meanwhile ends the start early. Returns whether it completed.

        Loading many models can take minutes, and systemd (or Ctrl-C) asking to stop must
        not wait for all of them. The device pool's own start runs in a thread and cannot be
        interrupted, so it is let finish (its workers then stop cleanly); the model loading
        after it is cancelled.

        Raises:
            Exception: whatever the start raised.
        """
        start = asyncio.ensure_future(service.start())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if start.done():
            start.result()
            return not self._stop.is_set()
        log.info("stop requested during start-up: cancelling the start")
        while not start.done() and not service.healthy():
            await asyncio.wait({start}, timeout=0.05)
        start.cancel()
        try:
            await start
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - stopping anyway; the start's failure is only worth a line
            log.warning("the interrupted start failed: %s", _describe(exc))
        return False

    async def _reload(self, service: Any) -> None:
        """Apply the re-read configuration; anything wrong leaves the running one (and its models) in place."""
        self._notifier.reloading()
        log.info("SIGHUP: reloading the configuration and rescanning the models folder")
        try:
            config = load_config(self._config_path, self._overrides)
            if not config.models_dir.is_dir():
                # A missing folder (an unmounted card, a typo) would otherwise unload every model.
                raise ConfigError(f"models_dir {config.models_dir} is not a folder (any more); "
                                  f"still serving the models loaded from {self.config.models_dir}")
            logging.getLogger().setLevel(config.log_level.upper())
            outcome = await service.reload(config)
            self.config = service.config
            changed = ", ".join(f"{name}" + (f" ({problem})" if problem else "") for name, problem in outcome.items())
            log.info("reload done%s", f": {changed}" if changed else ": nothing changed")
        except (ConfigError, EdgetpudError) as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
        except Exception as exc:  # noqa: BLE001 - a reload must never take the daemon down
            log.error("reload failed, keeping the running configuration: %s", _describe(exc))
        self._notifier.ready(_status_line(service))


def tune_malloc() -> None:
    """Keep glibc from mapping and unmapping a fresh region for every large message.

    Requests carry images of 0.1-8 MB; above glibc's default 128 KiB mmap threshold
    each one faults in new pages, which costs about 0.9 ms per 600 KB request here
    against 0.04 ms with these settings (scripts/bench/bench_overhead.py
    --tune-malloc). Elsewhere than glibc this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 8 * 1024 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024)
    except (OSError, AttributeError):
        log.debug("mallopt is not available; keeping the allocator's defaults")


def main(argv: Optional[List[str]] = None) -> int:
    """Console script ``edgetpud``; returns the exit code."""
    args = parse_args(argv)
    overrides = overrides_from(args)
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"edgetpud: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if config.zmq_listen:
        from .frigate import FrigateUnavailableError, import_zmq

        try:
            import_zmq()
        except FrigateUnavailableError as exc:
            print(f"edgetpud: {exc}", file=sys.stderr)
            return EXIT_USAGE
    setup_logging(config.log_level)
    tune_malloc()
    log.info("edgetpud starting (pid %d): devices %s, models %s", os.getpid(), ",".join(config.devices),
             config.models_dir)
    try:
        return asyncio.run(Daemon(config, args.config, overrides).run())
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""The sd_notify protocol: datagrams such as ``READY=1`` to the socket systemd names in $NOTIFY_SOCKET.

Written here (a dozen lines) rather than depending on libsystemd bindings. Without
$NOTIFY_SOCKET every call is a no-op, so the daemon runs the same outside systemd.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Callable, Mapping, Optional

log = logging.getLogger(__name__)

#: How long one message may wait for room in the service manager's queue. The sender is the event
#: loop, and a unix datagram socket's queue holds only about ten unread messages: a manager that
#: is not reading must cost the daemon a short pause, not its loop.
SEND_TIMEOUT_S = 1.0


class Notifier:
    """Sends state lines to systemd; never raises (systemd being away must not stop the daemon)."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self._address = address
        self._watchdog_s = self._watchdog_interval(env)

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str]) -> Optional[float]:
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0:
            return None
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return None  # meant for another process
        return int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    @property
    def watchdog_interval(self) -> Optional[float]:
        """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when no watchdog is set."""
        return None if self._watchdog_s is None else self._watchdog_s / 2

    def send(self, *lines: str) -> bool:
        """Send ``lines`` in one datagram; return whether it was delivered."""
        if not self._address:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT_S)
                sock.connect(self._address)
                sock.sendall(payload)
            return True
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self._address.replace("\0", "@"), exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """RELOADING=1 with the CLOCK_MONOTONIC time in µs, which systemd 253+ needs to match the reload."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    async def watchdog_loop(self, healthy: Callable[[], bool]) -> None:
        """Ping the watchdog from the event loop while ``healthy()`` holds; return at once without one.

        A stuck loop or an unhealthy daemon stops the pings, so systemd restarts it.
        """
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        while True:
            if healthy():
                self.watchdog()
            else:
                log.warning("not pinging the systemd watchdog: the daemon is unhealthy")
            await asyncio.sleep(interval)

"""Whether the daemon's listeners can be had, asked before any device starts.

A second daemon must not open the TPUs the first one serves, nor load every
model, only to find its address taken. The listeners' own bind still decides;
this only fails early, with a message that says who holds the address.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Optional

from .config import Config


def _port_in_use(host: str, port: int) -> bool:
    """Whether something listens on HOST:PORT, probed the way the listeners bind (SO_REUSEADDR)."""
    try:
        addresses = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return False  # the real bind says what is wrong with the name
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def preflight_listeners(config: Config) -> Optional[str]:
    """Why the listeners cannot be had (another daemon holds one), or None.

    Unix sockets: a live one is another server's, a stale one (nobody accepts) is
    replaced by the listener. TCP: probed with a bind as the listeners do.
    """
    for address in config.listen:
        if address.startswith("unix:"):
            path = address[len("unix:"):]
            try:
                if not stat.S_ISSOCK(os.lstat(path).st_mode):
                    return f"cannot listen on {address}: it exists and is not a socket; choose another --listen path"
            except OSError:
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                try:
                    probe.connect(path)
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                        continue  # a stale socket: the listener replaces it
            return (f"cannot listen on {address}: another process (another edgetpud?) is serving on it; "
                    "stop it or choose another --listen path")
        host, _, port = address.rpartition(":")
        if _port_in_use(host, int(port)):
            return f"cannot listen on {address}: the address is in use (is another edgetpud running?)"
    if config.metrics_listen:
        host, _, port = config.metrics_listen.rpartition(":")
        if int(port) and _port_in_use(host or "127.0.0.1", int(port)):
            return f"cannot serve metrics on {config.metrics_listen}: the address is in use"
    return None

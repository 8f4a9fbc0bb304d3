"""Frigate's ``zmq`` detector served by edgetpud (``--zmq-listen ipc://PATH``, ``zmq_listen``).

``protocol`` reads and writes the messages, ``handler`` answers them through the
service (the scheduler shares the devices with every other client), ``endpoint``
holds the ROUTER sockets on the daemon's loop. pyzmq is an optional extra
(``edgetpud[frigate]``); only ``endpoint`` imports it, when an endpoint starts.
"""
from __future__ import annotations

import logging
from typing import Any, List

from ..api.facade import ServiceFacade
from ..config import Config
from .endpoint import FrigateEndpoint, FrigateUnavailableError, import_zmq
from .handler import FrigateHandler

log = logging.getLogger(__name__)

__all__ = ["FrigateServer", "FrigateUnavailableError", "import_zmq"]


class FrigateServer:
    """Every ``zmq_listen`` endpoint of one daemon, with one handler and one ZMQ context."""

    def __init__(self, service: ServiceFacade, config: Config) -> None:
        self._zmq = import_zmq()
        self._context = self._zmq.Context()
        handler = FrigateHandler(service, deadline_s=config.zmq_timeout_s)
        self.endpoints: List[FrigateEndpoint] = [
            FrigateEndpoint(address, handler, self._context, config.max_message_bytes,
                            config.max_concurrent_requests, config.socket_mode, config.socket_group)
            for address in config.zmq_listen]

    def start(self) -> None:
        """Bind every endpoint (all or none).

        Raises:
            PreconditionError: an endpoint cannot be bound.
        """
        started: List[FrigateEndpoint] = []
        try:
            for endpoint in self.endpoints:
                endpoint.start()
                started.append(endpoint)
        except Exception:
            for endpoint in started:
                endpoint.close_now()
            self._context.term()
            raise

    async def stop(self, grace_s: float) -> None:
        """Let the requests in progress finish within ``grace_s``, then close the sockets."""
        for endpoint in self.endpoints:
            await endpoint.stop(grace_s)
        self._context.term()


def build_frigate_server(service: Any, config: Config) -> "FrigateServer | None":
    """The Frigate endpoints of ``config`` (None when it names none).

    Raises:
        FrigateUnavailableError: endpoints are configured but pyzmq is not installed.
    """
    if not config.zmq_listen:
        return None
    return FrigateServer(service, config)

"""grpc.health.v1: SERVING while the service is ready (accepting, with a device that can serve).

The status is read from the service's ``ready`` when asked, so it is never
stale; Watch re-reads it every ``poll_s`` seconds and answers when it changes.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .facade import ServiceFacade

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Health of the whole server ("") and of each registered service name (all the same)."""

    def __init__(self, service: ServiceFacade, service_names: Iterable[str], poll_s: float = 0.5) -> None:
        self._svc = service
        self._names = {"", *service_names}
        self._poll_s = poll_s

    def serving_status(self) -> int:
        """SERVING when the façade is ready: accepting requests, with a device in a state that accepts work."""
        return SERVING if self._svc.ready else NOT_SERVING

    async def Check(self, request: health_pb2.HealthCheckRequest, context) -> health_pb2.HealthCheckResponse:
        if request.service not in self._names:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=self.serving_status())

    async def Watch(self, request: health_pb2.HealthCheckRequest,
                    context) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last = None
        while True:
            status = self.serving_status() if request.service in self._names else SERVICE_UNKNOWN
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(self._poll_s)

"""Running one RPC against the service: deadline in, status code and metrics out.

Every servicer method goes through :func:`call` (``Servicer._call`` for the
façade's coroutines, ``Servicer._query`` for its plain queries), so error
mapping, request metrics and deadlines are handled the same way for every RPC.
Requests are counted in the served façade's own ``metrics``.
"""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Optional, TypeVar

import grpc

from edgetpud.daemon.service import InferenceResult

from .facade import RequestMetrics, ServiceFacade
from .status import to_status

T = TypeVar("T")


def deadline_of(context: grpc.aio.ServicerContext) -> Optional[float]:
    """The caller's deadline as an absolute time.monotonic(), or None when it set none."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + max(0.0, remaining)


def observe(metrics: RequestMetrics, model: str, device: str, code: grpc.StatusCode, seconds: float) -> None:
    """Record one request in ``metrics``."""
    metrics.observe_request(model or "", device or "", code.name, seconds)


async def call(context: grpc.aio.ServicerContext, model: str, run: Callable[[], Awaitable[T]],
               metrics: RequestMetrics) -> T:
    """Await ``run()``; on error abort the RPC with the mapped status code; count it in ``metrics``.

    Raises:
        grpc.aio.AbortError: (through ``context.abort``) whenever ``run`` failed.
    """
    start = time.perf_counter()
    device = ""
    code = grpc.StatusCode.OK
    try:
        result = await run()
        if isinstance(result, InferenceResult):  # only an inference is served by a device
            device = result.device
        return result
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:  # noqa: BLE001 - every error is mapped, unknown ones to INTERNAL
        code, message = to_status(exc)
        await context.abort(code, message)
        raise  # unreachable: abort raises
    finally:
        observe(metrics, model, device, code, time.perf_counter() - start)


class Servicer:
    """Base of the servicers: the façade they translate to, and whose metrics count their RPCs."""

    def __init__(self, service: ServiceFacade) -> None:
        self._svc = service

    @property
    def _metrics(self) -> RequestMetrics:
        return self._svc.metrics

    async def _call(self, context: grpc.aio.ServicerContext, model: str, run: Callable[[], Awaitable[T]]) -> T:
        """One RPC whose work is a coroutine (``run`` returns it)."""
        return await call(context, model, run, self._metrics)

    async def _query(self, context: grpc.aio.ServicerContext, model: str, ask: Callable[[], T]) -> T:
        """One RPC whose work is a plain call of the façade (a query: devices, models, a model's info)."""
        async def run() -> T:
            return ask()
        return await call(context, model, run, self._metrics)

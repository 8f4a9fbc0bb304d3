"""Running one RPC against the service: deadline in, status code and metrics out.

Every servicer method goes through :func:`call` (``Servicer._call``), so error
mapping, request metrics and deadlines are handled the same way for every RPC.
Requests are counted in the served façade's own ``metrics``.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Optional, TypeVar

import grpc

from .status import to_status

T = TypeVar("T")


def deadline_of(context: grpc.aio.ServicerContext) -> Optional[float]:
    """The caller's deadline as an absolute time.monotonic(), or None when it set none."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + max(0.0, remaining)


def observe(metrics: Any, model: str, device: str, code: grpc.StatusCode, seconds: float) -> None:
    """Record one request in ``metrics`` (a ``daemon.metrics.Metrics``; None: not counted)."""
    if metrics is not None:
        metrics.observe_request(model or "", device or "", code.name, seconds)


async def call(context: grpc.aio.ServicerContext, model: str, run: Callable[[], Awaitable[T]],
               metrics: Any = None) -> T:
    """Await ``run()``; on error abort the RPC with the mapped status code; count it in ``metrics``.

    Raises:
        grpc.aio.AbortError: (through ``context.abort``) whenever ``run`` failed.
    """
    start = time.perf_counter()
    device = ""
    code = grpc.StatusCode.OK
    try:
        result = await run()
        device = str(getattr(result, "device", "") or "")
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


async def resolve(value: Any) -> Any:
    """``await value`` if it is awaitable, else ``value``: façade methods may be either."""
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future) or hasattr(value, "__await__"):
        return await value
    return value


class Servicer:
    """Base of the servicers: the façade they translate to, and whose metrics count their RPCs."""

    def __init__(self, service: Any) -> None:
        self._svc = service

    @property
    def _metrics(self) -> Any:
        return getattr(self._svc, "metrics", None)  # a façade without metrics (a test fake) counts nothing

    async def _call(self, context: grpc.aio.ServicerContext, model: str, run: Callable[[], Awaitable[T]]) -> T:
        return await call(context, model, run, self._metrics)

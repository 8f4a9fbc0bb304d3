"""Prometheus metrics: request counts and latencies, queue depth, device telemetry, worker restarts.

Each Service owns one ``Metrics`` with its own ``CollectorRegistry`` (the process-wide
default registry is never touched, so tests and several services do not mix).
Device figures are read at scrape time from the pool and the scheduler, so nothing
has to push them. Requests are counted in plain per-label rows (a dict lookup, a
bisect and two additions per request) and turned into Prometheus families when
scraped: on a host whose caches are cold between requests, prometheus-client's
``labels().inc()`` and ``labels().observe()`` cost tens of µs per request. The
endpoint is off unless ``metrics_listen`` is set.
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .errors import PreconditionError
from .results import DeviceUsage, RequestSummary

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DEVICE_STATES = ("needs_firmware", "ready", "busy", "throttled", "lost", "failed")




@dataclass(frozen=True)
class MetricsSummary:
    """What ``edgetpuctl metrics`` shows: the Prometheus figures summed up, for operators without Prometheus."""

    uptime_s: float
    requests: List[RequestSummary] = field(default_factory=list)
    usage: List[DeviceUsage] = field(default_factory=list)


def quantile(q: float, buckets: Sequence[float], counts: Sequence[float]) -> float:
    """The ``q`` quantile of a histogram, interpolated within its bucket as Prometheus' histogram_quantile does.

    ``counts`` has one entry per bucket bound and one above the last; a quantile that
    falls above the last bound is reported as that bound (the histogram knows no more).
    """
    total = sum(counts)
    if total <= 0:
        return 0.0
    rank, below = q * total, 0.0
    for i, count in enumerate(counts):
        if count and below + count >= rank:
            if i >= len(buckets):
                return float(buckets[-1])
            lower = buckets[i - 1] if i else 0.0
            return float(lower + (buckets[i] - lower) * (rank - below) / count)
        below += count
    return float(buckets[-1])


class _DeviceCollector(Collector):
    """Reads devices and queues when Prometheus scrapes."""

    def __init__(self, devices: Callable[[], Iterable[Any]], queue_depths: Callable[[], Dict[str, int]]) -> None:
        self._devices = devices
        self._queue_depths = queue_depths

    def collect(self) -> Iterable[Any]:
        queue = GaugeMetricFamily("edgetpud_queue_depth", "Requests waiting in a device's queue", labels=["device"])
        temp = GaugeMetricFamily("edgetpud_device_temperature_celsius", "Device temperature", labels=["device"])
        throttle = GaugeMetricFamily("edgetpud_device_throttle_level", "Thermal throttle level (0: none)",
                                     labels=["device"])
        state = GaugeMetricFamily("edgetpud_device_state", "1 for the device's current state", labels=["device", "state"])
        inflight = GaugeMetricFamily("edgetpud_device_inflight", "Invocations the device's worker holds", labels=["device"])
        restarts = CounterMetricFamily("edgetpud_worker_restarts", "Device worker restarts", labels=["device"])
        try:
            devices = list(self._devices())
            depths = dict(self._queue_depths())
        except Exception as exc:  # a scrape must never take the daemon down
            log.warning("metrics scrape failed: %s", exc)
            devices, depths = [], {}
        for d in devices:
            if d.temperature_c is not None:
                temp.add_metric([d.id], float(d.temperature_c))
            throttle.add_metric([d.id], float(d.throttle_level or 0))
            for name in DEVICE_STATES:
                state.add_metric([d.id, name], 1.0 if d.state == name else 0.0)
            inflight.add_metric([d.id], float(getattr(d, "inflight", 0) or 0))
            restarts.add_metric([d.id], float(d.restarts))
        for device, depth in sorted(depths.items()):
            queue.add_metric([device], float(depth))
        return [queue, temp, throttle, state, inflight, restarts]


class _RequestCollector(Collector):
    """Requests by (model, device, code): a count and a latency histogram, kept as plain rows.

    A row is ``[sum of seconds, count in bucket 0, ..., count above the last bucket]``.
    """

    LABELS = ["model", "device", "code"]

    def __init__(self) -> None:
        self._rows: Dict[Tuple[str, str, str], List[float]] = {}
        self._lock = threading.Lock()  # the loop records, the HTTP thread scrapes
        self._bounds = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]

    def observe(self, labels: Tuple[str, str, str], seconds: float) -> None:
        with self._lock:
            row = self._rows.get(labels)
            if row is None:
                row = self._rows[labels] = [0.0] * (len(LATENCY_BUCKETS) + 2)
            row[0] += seconds
            row[1 + bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def summary(self) -> List[RequestSummary]:
        """Per model, over every device and code."""
        with self._lock:
            rows = [(labels, list(row)) for labels, row in self._rows.items()]
        by_model: Dict[str, Tuple[Dict[str, int], List[float]]] = {}
        for (model, _, code), row in rows:
            codes, counts = by_model.setdefault(model, ({}, [0.0] * (len(LATENCY_BUCKETS) + 1)))
            codes[code] = codes.get(code, 0) + int(sum(row[1:]))
            for i, count in enumerate(row[1:]):
                counts[i] += count
        out = []
        for model in sorted(by_model):
            codes, counts = by_model[model]
            out.append(RequestSummary(
                model=model, count=sum(codes.values()), errors=sum(n for c, n in codes.items() if c != "OK"),
                codes=dict(sorted(codes.items())), p50_s=quantile(0.5, LATENCY_BUCKETS, counts),
                p90_s=quantile(0.9, LATENCY_BUCKETS, counts), p99_s=quantile(0.99, LATENCY_BUCKETS, counts)))
        return out

    def collect(self) -> Iterable[Any]:
        requests = CounterMetricFamily("edgetpud_requests", "Requests served, by model, device and status code",
                                       labels=self.LABELS)
        latency = HistogramMetricFamily("edgetpud_request_seconds",
                                        "Request latency, by model, device and status code", labels=self.LABELS)
        with self._lock:
            rows = [(labels, list(row)) for labels, row in self._rows.items()]
        for labels, row in sorted(rows):
            cumulative, buckets = 0.0, []
            for bound, count in zip(self._bounds, row[1:]):
                cumulative += count
                buckets.append((bound, cumulative))
            requests.add_metric(list(labels), cumulative)
            latency.add_metric(list(labels), buckets, sum_value=row[0])
        return [requests, latency]


class Metrics:
    """The metrics of one service, and its optional HTTP endpoint."""

    def __init__(self, devices: Callable[[], Iterable[Any]] = list,
                 queue_depths: Callable[[], Dict[str, int]] = dict) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = _RequestCollector()
        self.registry.register(self._requests)
        self.registry.register(_DeviceCollector(devices, queue_depths))
        self._devices = devices
        self._server: Optional[Tuple[Any, Any]] = None
        self._started = time.monotonic()
        self._busy: Dict[str, List[float]] = {}  # device -> [invocations, seconds in its invoke]

    def observe_request(self, model: str, device: str, code: str, seconds: float) -> None:
        """Count one finished request and its latency (the API layer calls this on ``service.metrics``)."""
        self._requests.observe((model or "", device or "", code or ""), max(0.0, float(seconds)))

    def observe_invocation(self, device: str, seconds: float) -> None:
        """Count one invocation's time on ``device`` (the service calls this; only the loop does)."""
        busy = self._busy.get(device)
        if busy is None:
            busy = self._busy[device] = [0.0, 0.0]
        busy[0] += 1
        busy[1] += max(0.0, float(seconds))

    def summary(self) -> MetricsSummary:
        """Request counts and latency percentiles per model, and each device's utilisation, since the start."""
        uptime = max(1e-9, time.monotonic() - self._started)
        try:
            known = {d.id for d in self._devices()}
        except Exception as exc:  # the summary must answer even when the pool does not
            log.warning("cannot read devices for the metrics summary: %s", exc)
            known = set()
        busy = {d: self._busy.get(d, [0.0, 0.0]) for d in known | set(self._busy)}  # idle devices show as 0
        usage = [DeviceUsage(device=d, invocations=int(n), busy_s=s, utilization=min(1.0, s / uptime))
                 for d, (n, s) in sorted(busy.items())]
        return MetricsSummary(uptime_s=uptime, requests=self._requests.summary(), usage=usage)

    def serve(self, address: str) -> int:
        """Start the HTTP endpoint on ``HOST:PORT`` (port 0 picks one); return the port.

        Raises:
            PreconditionError: the address cannot be bound.
        """
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        try:
            result = start_http_server(int(port), addr=host, registry=self.registry)
        except OSError as exc:
            raise PreconditionError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from None
        if isinstance(result, tuple):
            self._server = result
            bound = int(result[0].server_address[1])
        else:  # old prometheus-client: no handle to stop it
            bound = int(port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        """Stop the HTTP endpoint, if any."""
        if self._server is not None:
            httpd, thread = self._server
            self._server = None
            httpd.shutdown()
            httpd.server_close()
            thread.join(5.0)

    def sample(self, name: str, labels: Optional[Dict[str, str]] = None) -> Optional[float]:
        """One sample's value (for tests and status output)."""
        return self.registry.get_sample_value(name, labels or {})


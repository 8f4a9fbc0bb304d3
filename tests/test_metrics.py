"""Prometheus metrics: per-service registries, request counters, device gauges read at scrape time."""
from __future__ import annotations

import urllib.request
from types import SimpleNamespace

import prometheus_client

import pytest

from edgetpud.daemon.metrics import Metrics, quantile


def device(id_: str, state: str = "ready", temperature: float | None = 50.0, throttle: int | None = 0,
           restarts: int = 0):
    return SimpleNamespace(id=id_, state=state, temperature_c=temperature, throttle_level=throttle,
                           restarts=restarts, inflight=1)


def test_requests_are_counted_per_model_device_and_code():
    m = Metrics()
    m.observe_request("cls", "mock:0", "OK", 0.004)
    m.observe_request("cls", "mock:0", "OK", 0.02)
    m.observe_request("cls", "", "NOT_FOUND", 0.001)
    ok = {"model": "cls", "device": "mock:0", "code": "OK"}
    assert m.sample("edgetpud_requests_total", ok) == 2
    assert m.sample("edgetpud_request_seconds_count", ok) == 2
    assert m.sample("edgetpud_request_seconds_bucket", {**ok, "le": "0.005"}) == 1
    assert m.sample("edgetpud_requests_total", {"model": "cls", "device": "", "code": "NOT_FOUND"}) == 1


def test_device_gauges_are_read_when_scraped():
    devices = [device("mock:0"), device("mock:1", state="failed", temperature=None, throttle=None, restarts=2)]
    depths = {"mock:0": 3}
    m = Metrics(devices=lambda: devices, queue_depths=lambda: depths)
    assert m.sample("edgetpud_queue_depth", {"device": "mock:0"}) == 3
    assert m.sample("edgetpud_device_temperature_celsius", {"device": "mock:0"}) == 50.0
    assert m.sample("edgetpud_device_temperature_celsius", {"device": "mock:1"}) is None
    assert m.sample("edgetpud_device_state", {"device": "mock:1", "state": "failed"}) == 1
    assert m.sample("edgetpud_device_state", {"device": "mock:1", "state": "ready"}) == 0
    assert m.sample("edgetpud_worker_restarts_total", {"device": "mock:1"}) == 2
    devices[0].temperature_c = 91.0
    devices[0].throttle_level = 2
    depths["mock:0"] = 0
    assert m.sample("edgetpud_device_temperature_celsius", {"device": "mock:0"}) == 91.0
    assert m.sample("edgetpud_device_throttle_level", {"device": "mock:0"}) == 2
    assert m.sample("edgetpud_queue_depth", {"device": "mock:0"}) == 0


def test_a_failing_scrape_source_does_not_break_the_scrape():
    def broken():
        raise RuntimeError("pool gone")
    m = Metrics(devices=broken)
    m.observe_request("a", "b", "OK", 0.1)
    assert m.sample("edgetpud_requests_total", {"model": "a", "device": "b", "code": "OK"}) == 1


def test_each_service_counts_its_own_requests_and_default_registry_is_untouched():
    served, other = Metrics(), Metrics()
    served.observe_request("m", "mock:0", "OK", 0.01)  # what the API layer does on its service's metrics
    labels = {"model": "m", "device": "mock:0", "code": "OK"}
    assert served.sample("edgetpud_requests_total", labels) == 1
    assert other.sample("edgetpud_requests_total", labels) is None
    assert prometheus_client.REGISTRY.get_sample_value("edgetpud_requests_total", labels) is None


def test_http_endpoint_serves_and_stops():
    m = Metrics(devices=lambda: [device("mock:0")], queue_depths=lambda: {"mock:0": 1})
    port = m.serve("127.0.0.1:0")
    try:
        m.observe_request("cls", "mock:0", "OK", 0.003)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'edgetpud_requests_total{code="OK",device="mock:0",model="cls"} 1.0' in text
        assert 'edgetpud_queue_depth{device="mock:0"} 1.0' in text
    finally:
        m.close()


def test_request_histogram_matches_prometheus_clients_own():
    """The plain-row histogram exposes what prometheus_client's Histogram would, bucket bounds included."""
    import random

    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from edgetpud.daemon.metrics import LATENCY_BUCKETS

    reference = CollectorRegistry()
    counter = Counter("edgetpud_requests", "x", ["model", "device", "code"], registry=reference)
    histogram = Histogram("edgetpud_request_seconds", "x", ["model", "device", "code"],
                          buckets=LATENCY_BUCKETS, registry=reference)
    m = Metrics()
    rng = random.Random(7)
    values = [rng.choice(LATENCY_BUCKETS) for _ in range(50)] + [rng.uniform(0, 12) for _ in range(200)] + [0.0]
    for i, seconds in enumerate(values):
        labels = ("cls", f"mock:{i % 2}", "OK" if i % 5 else "NOT_FOUND")
        m.observe_request(*labels, seconds)
        counter.labels(*labels).inc()
        histogram.labels(*labels).observe(seconds)

    def samples(registry: CollectorRegistry) -> dict:
        out = {}
        for family in registry.collect():
            if family.name.startswith("edgetpud_request"):
                for s in family.samples:
                    if not s.name.endswith("_created"):
                        out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    ours, theirs = samples(m.registry), samples(reference)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert abs(ours[key] - value) < 1e-9, key
    text = generate_latest(m.registry).decode()
    assert 'edgetpud_request_seconds_bucket{code="OK",device="mock:0",le="+Inf",model="cls"}' in text
    assert 'edgetpud_request_seconds_bucket{code="OK",device="mock:0",le="0.001",model="cls"}' in text


def test_quantiles_are_interpolated_within_their_bucket_as_prometheus_does():
    buckets = (0.01, 0.1, 1.0)
    assert quantile(0.5, buckets, [0, 10, 0, 0]) == pytest.approx(0.055)  # all between 0.01 and 0.1: the middle
    assert quantile(0.9, buckets, [9, 0, 1, 0]) == pytest.approx(0.01)  # the 9th of 10 is the first bucket's last
    assert quantile(0.99, buckets, [9, 0, 0, 1]) == 1.0  # above the last bound: that bound, the most it knows
    assert quantile(0.5, buckets, [0, 0, 0, 0]) == 0.0


def test_the_summary_counts_requests_per_model_and_device_utilisation():
    # Without Prometheus an operator had no view of these at all.
    m = Metrics(devices=lambda: [device("mock:0"), device("mock:1")])
    for seconds in (0.002, 0.003, 0.004, 0.2):
        m.observe_request("cls", "mock:0", "OK", seconds)
    m.observe_request("cls", "", "RESOURCE_EXHAUSTED", 0.0001)
    m.observe_invocation("mock:0", 0.05)
    m.observe_invocation("mock:0", 0.05)
    summary = m.summary()
    (cls,) = summary.requests
    assert (cls.model, cls.count, cls.errors) == ("cls", 5, 1)
    assert cls.codes == {"OK": 4, "RESOURCE_EXHAUSTED": 1}
    assert 0.0025 <= cls.p50_s <= 0.005 and 0.1 <= cls.p99_s <= 0.25
    busy, idle = summary.usage
    assert (busy.device, busy.invocations, idle.device, idle.invocations) == ("mock:0", 2, "mock:1", 0)
    assert busy.busy_s == pytest.approx(0.1) and 0 < busy.utilization <= 1 and idle.utilization == 0
    assert summary.uptime_s > 0

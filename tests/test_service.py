"""The Service façade on real Coral models and the HAL's mock devices (real worker processes)."""
from __future__ import annotations

import asyncio
import io
import time
import urllib.request
from pathlib import Path
from typing import List

import grpc
import numpy as np
import pytest

from bundles import make_bundle
from fake_pool import FakePool
from edgetpud.daemon.api.status import to_status
from edgetpud.daemon.config import build_config
from edgetpud.daemon.errors import (ImageError, InvalidArgumentError, ModelError, NotFoundError, PreconditionError,
                                    ShuttingDownError)
from edgetpud.daemon.scheduler import DeadlineExceededError
from edgetpud.daemon.service import ImageInput, InferenceRequest, RawFrame, Service

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

SMALL = "mobilenet_v1_0.25_128_quant"
LARGE = "mobilenet_v1_0.5_160_quant"


@pytest.fixture
def models_dir(tmp_path, test_data) -> Path:
    models = tmp_path / "models"
    make_bundle(models, test_data, SMALL)
    make_bundle(models, test_data, LARGE, LARGE)
    (models / "broken").mkdir()
    (models / "broken" / "model.tflite").write_bytes(b"not a model at all")
    return models


def make_service(tmp_path: Path, models: Path, devices: str = "mock:1", **extra) -> Service:
    config = build_config({"devices": [devices], "models_dir": str(models), "state_dir": str(tmp_path / "state"),
                           "grace_s": 5, **extra})
    return Service(config)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def cat(test_data: Path) -> InferenceRequest:
    return InferenceRequest(image=ImageInput(data=(test_data / "cat.bmp").read_bytes()))


class ContinuousLoad:
    """Clients (four by default) classifying back to back until the ``async with`` block ends.

    What cameras do while an operator replaces a model or a device goes away; the
    tests assert that not one request fails and look at which version or device
    answered. Leaving the block stops the clients and waits for them.
    """

    def __init__(self, svc: Service, model: str, request: InferenceRequest, clients: int = 4) -> None:
        self.svc, self.model, self.request, self.clients = svc, model, request, clients
        self.results: list = []
        self.failures: List[BaseException] = []
        self._stop = asyncio.Event()
        self._tasks: List[asyncio.Future] = []

    async def _client(self) -> None:
        while not self._stop.is_set():
            try:
                self.results.append(await self.svc.infer(self.model, "classify", self.request))
            except Exception as exc:  # noqa: BLE001 - counted, asserted zero
                self.failures.append(exc)

    async def __aenter__(self) -> "ContinuousLoad":
        self._tasks = [asyncio.ensure_future(self._client()) for _ in range(self.clients)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def fetch_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def top3(payload) -> dict:
    return {c.id: c.score for c in payload[:3]}


def test_classification_expectations_and_status(tmp_path, models_dir, test_data):
    async def main():
        svc = make_service(tmp_path, models_dir, metrics_listen="127.0.0.1:0")
        await svc.start()
        try:
            status = svc.status()
            assert status["ready"] is True
            states = {m["name"]: m for m in status["models"]}
            assert states["broken"]["state"] == "failed" and states["broken"]["problems"]
            assert states[SMALL]["state"] == "ready" and states[SMALL]["devices"] == ["mock:0"]
            assert states[SMALL]["labels"] == 1001 and states[SMALL]["task"] == "classify"
            assert states[SMALL]["compatibility"]["verdict"] == "full"
            assert states[SMALL]["inputs"][0]["shape"] == [1, 128, 128, 3]

            small = await svc.infer(SMALL, "classify", cat(test_data))
            assert top3(small.payload).get(283, 0) >= 0.25
            assert small.device == "mock:0" and small.version == 1 and small.model == SMALL
            assert set(small.timing) >= {"queue_s", "preprocess_s", "invoke_s", "postprocess_s"}
            large = await svc.infer(LARGE, None, cat(test_data))
            assert top3(large.payload).get(286, 0) >= 0.51
            assert large.payload[0].label == "Egyptian cat"

            inputs, outputs = svc.model_specs(LARGE)
            assert inputs[0].shape == (1, 160, 160, 3) and outputs[0].shape == (1, 1001)
            svc.metrics.observe_request(SMALL, small.device, "OK", small.timing["total_s"])  # as the API layer does
            scrape = await asyncio.get_running_loop().run_in_executor(None, fetch_metrics, svc.metrics_port)
            assert f'edgetpud_requests_total{{code="OK",device="mock:0",model="{SMALL}"}} 1.0' in scrape
            assert 'edgetpud_device_state{device="mock:0",state="ready"} 1.0' in scrape
            assert 'edgetpud_queue_depth{device="mock:0"} 0.0' in scrape
            with pytest.raises(NotFoundError, match="broken"):
                await svc.infer("broken", "classify", cat(test_data))
            with pytest.raises(NotFoundError):
                await svc.infer("nope", "classify", cat(test_data))
        finally:
            await svc.stop()
    run(main())


def test_frames_crops_raw_tensors_and_bad_requests(tmp_path, models_dir, test_data):
    from PIL import Image

    rgb = np.asarray(Image.open(test_data / "cat.bmp").convert("RGB"))
    h, w = rgb.shape[:2]
    bgr_padded = np.zeros((h, w * 3 + 8), np.uint8)
    bgr_padded[:, : w * 3] = rgb[:, :, ::-1].reshape(h, w * 3)

    async def main():
        svc = make_service(tmp_path, models_dir)
        await svc.start()
        try:
            frame = RawFrame(bgr_padded.tobytes(), w, h, w * 3 + 8, "BGR")
            result = await svc.infer(LARGE, "classify", InferenceRequest(image=ImageInput(frame=frame),
                                                                           options={"top_k": 1}))
            assert [c.id for c in result.payload] == [286]
            full = await svc.infer(LARGE, "classify", InferenceRequest(
                image=ImageInput(data=(test_data / "cat.bmp").read_bytes()), options={"top_k": 3}))
            x, y, cw, ch = 0, h // 2, w // 2, h - h // 2  # the bottom-left quarter: mostly not the cat
            cropped = await svc.infer(LARGE, "classify", InferenceRequest(
                image=ImageInput(data=(test_data / "cat.bmp").read_bytes(), crop=(x, y, cw, ch)),
                options={"top_k": 3}))
            quarter = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(rgb[y:y + ch, x:x + cw])).save(quarter, "BMP")
            reference = await svc.infer(LARGE, "classify", InferenceRequest(
                image=ImageInput(data=quarter.getvalue()), options={"top_k": 3}))
            top3 = [[(c.id, c.score) for c in r.payload] for r in (full, cropped, reference)]
            assert top3[1] == top3[2]  # the crop is that region, as if the client had cut it out itself
            assert top3[1] != top3[0] and cropped.payload[0].score < full.payload[0].score - 0.3

            zeros = {"input": np.zeros((1, 128, 128, 3), np.uint8)}
            name = svc.model_specs(SMALL)[0][0].name
            raw = await svc.infer(SMALL, "raw", InferenceRequest(tensors={name: zeros["input"]}))
            (out,) = raw.payload.values()
            assert out.shape == (1, 1001)

            bad = [
                (InferenceRequest(image=ImageInput(data=b"not an image")), ImageError, "not a JPEG, PNG or BMP"),
                (InferenceRequest(image=ImageInput(frame=RawFrame(b"\0" * 10, w, h, w * 3))), ImageError,
                 f"frame buffer holds 10 bytes; {w}x{h} RGB with stride {w * 3} needs {w * 3 * h}"),
                (InferenceRequest(tensors={name: np.zeros((1, 2), np.uint8)}), ImageError,
                 r"input 'input' must have shape \[1, 128, 128, 3\], got \[1, 2\]"),
                (InferenceRequest(tensors={name: np.zeros((1, 128, 128, 3), np.float32)}), ImageError,
                 "must have dtype uint8, got float32"),
                (InferenceRequest(image=ImageInput(data=b"x"), options={"bogus": 1}), InvalidArgumentError,
                 "unknown option 'bogus'"),
            ]
            for request, error, message in bad:
                task = "raw" if request.tensors is not None else "classify"
                with pytest.raises(error, match=message) as info:
                    await svc.infer(SMALL, task, request)
                assert to_status(info.value)[0] == grpc.StatusCode.INVALID_ARGUMENT, info.value
            with pytest.raises(InvalidArgumentError, match="serves classify"):
                await svc.infer(SMALL, "detect", cat(test_data))
            with pytest.raises(DeadlineExceededError):
                await svc.infer(SMALL, "classify", cat(test_data), deadline=time.monotonic() - 0.01)
            ok = await svc.infer(SMALL, "classify", cat(test_data))  # still serving after the errors
            assert ok.payload
        finally:
            await svc.stop()
    run(main())


def test_replace_under_continuous_load_fails_nothing(tmp_path, models_dir, test_data):
    """Two replacements while 4 clients keep classifying: zero failures, each request on one version."""
    async def main():
        svc = make_service(tmp_path, models_dir, devices="mock:2")
        await svc.start()
        try:
            await svc.load_model("cls", path=models_dir / SMALL)
            async with ContinuousLoad(svc, "cls", cat(test_data)) as load:
                await asyncio.sleep(0.2)
                state = await svc.load_model("cls", path=models_dir / LARGE)
                assert state.version == 2 and sorted(state.devices) == ["mock:0", "mock:1"]
                await asyncio.sleep(0.2)
                state = await svc.load_model("cls", path=models_dir / SMALL)
                assert state.version == 3
                await asyncio.sleep(0.2)
            assert load.failures == []
            versions = [r.version for r in load.results]
            assert {1, 2, 3} <= set(versions)
            assert versions.index(3) > versions.index(2)
            for _ in range(100):  # old versions are released once their last request ends
                if svc.model_info("cls").versions == [3]:
                    break
                await asyncio.sleep(0.02)
            assert svc.model_info("cls").versions == [3]
            devices = {d.id: d.models for d in svc.devices()}
            assert all("cls@1" not in m and "cls@2" not in m and "cls@3" in m for m in devices.values())
        finally:
            await svc.stop()
    run(main())


def test_upload_unload_and_explicit_version(tmp_path, models_dir, test_data):
    async def main():
        svc = make_service(tmp_path, tmp_path / "empty-models")
        await svc.start()
        try:
            assert svc.models() == []
            data = (test_data / f"{SMALL}.tflite").read_bytes()
            state = await svc.load_model("uploaded", data=data)
            assert state.version == 1 and state.state == "ready"
            assert list((tmp_path / "state" / "uploads" / "uploaded").rglob("*.tflite"))
            result = await svc.infer("uploaded", "classify", cat(test_data), version="1")
            assert result.version == 1
            with pytest.raises(NotFoundError):
                await svc.infer("uploaded", "classify", cat(test_data), version=7)
            with pytest.raises(ModelError):
                await svc.load_model("bad name!", data=data)
            with pytest.raises(ModelError):
                await svc.load_model("junk", data=b"0123456789abcdef")
            await svc.unload_model("uploaded")
            with pytest.raises(NotFoundError):
                await svc.infer("uploaded", "classify", cat(test_data))
            with pytest.raises(NotFoundError):
                await svc.unload_model("uploaded")
            state = await svc.load_model("uploaded", data=data)
            assert state.version == 2  # versions never repeat for a name
        finally:
            await svc.stop()
    run(main())


def test_stop_drains_accepted_requests_and_refuses_new(tmp_path, models_dir, test_data):
    async def main():
        svc = make_service(tmp_path, models_dir, mock_latency_s=0.02)
        await svc.start()
        request = cat(test_data)
        accepted = [asyncio.ensure_future(svc.infer(SMALL, "classify", request)) for _ in range(8)]
        await asyncio.sleep(0)
        draining = asyncio.ensure_future(svc.drain(grace_s=20))
        await asyncio.sleep(0)
        assert not svc.ready  # health says NOT_SERVING while the accepted requests finish
        with pytest.raises(ShuttingDownError) as refused:  # a newcomer is told to retry, at once
            await svc.infer(SMALL, "classify", request)
        assert to_status(refused.value)[0] == grpc.StatusCode.UNAVAILABLE
        assert not draining.done()
        await draining
        results = await asyncio.gather(*accepted, return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        await svc.stop(grace_s=20)
        with pytest.raises(ShuttingDownError, match="shutting down"):
            await svc.infer(SMALL, "classify", request)
    run(main())


def test_a_request_before_start_is_refused_as_not_ready(tmp_path, models_dir, test_data):
    async def main():
        svc = make_service(tmp_path, models_dir)
        with pytest.raises(PreconditionError, match="starting") as refused:
            await svc.infer(SMALL, "classify", cat(test_data))
        assert to_status(refused.value)[0] == grpc.StatusCode.FAILED_PRECONDITION
    run(main())


def test_worker_death_is_retried_on_the_other_device(tmp_path, models_dir, test_data):
    async def main():
        svc = make_service(tmp_path, models_dir, devices="mock:2")
        await svc.start()
        try:
            control = svc.mock_control
            assert control is not None
            control.inject("mock:0", "abort")
            request = cat(test_data)
            failures: List[BaseException] = []
            for _ in range(10):  # until mock:0 has taken a request and died with it
                results = await asyncio.gather(*(svc.infer(SMALL, "classify", request) for _ in range(8)),
                                               return_exceptions=True)
                failures += [r for r in results if isinstance(r, BaseException)]
                if control.devices()[0]["faults"] == []:
                    break
            # requests held by the dying worker are retried on mock:1, queued ones moved there
            assert failures == []
            for _ in range(200):
                devices = {d.id: (d.state, d.restarts) for d in svc.devices()}
                if devices == {"mock:0": ("ready", 1), "mock:1": ("ready", 0)}:
                    break
                await asyncio.sleep(0.05)
            assert devices == {"mock:0": ("ready", 1), "mock:1": ("ready", 0)}
            after = await svc.infer(SMALL, "classify", request)
            assert top3(after.payload).get(283, 0) >= 0.25
        finally:
            await svc.stop()
    run(main())


def test_unplug_under_load_moves_work_to_the_other_device(tmp_path, models_dir, test_data):
    async def main():
        svc = make_service(tmp_path, models_dir, devices="mock:2", mock_latency_s=0.005)
        await svc.start()

        async def state_of(device: str, wanted: str) -> None:
            for _ in range(400):
                if {d.id: d.state for d in svc.devices()}[device] == wanted:
                    return
                await asyncio.sleep(0.025)
            pytest.fail(f"{device} never became {wanted}: {svc.devices()}")

        try:
            async with ContinuousLoad(svc, SMALL, cat(test_data)) as load:
                await asyncio.sleep(0.3)
                svc.mock_control.unplug("mock:0")
                await state_of("mock:0", "lost")
                mark = len(load.results)
                await asyncio.sleep(0.3)
                assert {r.device for r in load.results[mark:]} == {"mock:1"}
                svc.mock_control.replug("mock:0")
                await state_of("mock:0", "ready")
                mark = len(load.results)
                await asyncio.sleep(0.5)
                assert "mock:0" in {r.device for r in load.results[mark:]}  # back in service, model reloaded
        finally:
            await svc.stop()
        assert load.failures == []
    run(main())


def test_a_device_that_joins_gets_the_models_and_a_lost_one_gets_no_work(tmp_path, test_data):
    async def until(check) -> None:
        for _ in range(200):
            if check():
                return
            await asyncio.sleep(0.01)
        pytest.fail("condition never met")

    async def main():
        models = tmp_path / "models"
        make_bundle(models, test_data, SMALL)
        pool = FakePool(["mock:0"], outputs=[np.zeros((1, 1001), np.uint8)])
        config = build_config({"devices": ["mock:1"], "models_dir": str(models), "state_dir": str(tmp_path / "s")})
        svc = Service(config, pool=pool)
        await svc.start()
        try:
            key = f"{SMALL}@1"
            assert pool.placements() == {("mock:0", key)}
            pool.emit("mock:1", "added")
            await until(lambda: ("mock:1", key) in pool.placements() and svc.scheduler.holders(key) == {"mock:0", "mock:1"})
            assert svc.model_info(SMALL).devices == ["mock:0", "mock:1"]
            pool.emit("mock:0", "lost", state="lost")
            await until(lambda: svc.scheduler.usable() == {"mock:1"})
            pool.invoked.clear()
            results = [await svc.infer(SMALL, "classify", cat(test_data)) for _ in range(3)]
            assert {r.device for r in results} == {"mock:1"} and set(pool.invoked) == {"mock:1"}
        finally:
            await svc.stop()
    run(main())


def test_single_device_worker_death_fails_only_what_it_held(tmp_path, models_dir, test_data):
    from edgetpud.hal.errors import DeviceUnavailableError

    async def main():
        svc = make_service(tmp_path, models_dir, mock_latency_s=0.005)
        await svc.start()
        try:
            svc.mock_control.inject("mock:0", "abort")
            request = cat(test_data)
            results = await asyncio.gather(*(svc.infer(SMALL, "classify", request) for _ in range(12)),
                                           return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            assert failures, "the injected abort never fired"
            # only what the dying worker held fails (cleanly); queued requests waited for the restart
            assert all(isinstance(f, DeviceUnavailableError) for f in failures), failures
            assert len(failures) <= 4  # the pool's slots per device
            served = [r for r in results if not isinstance(r, BaseException)]
            assert served and all(top3(r.payload).get(283, 0) >= 0.25 for r in served)
        finally:
            await svc.stop()
    run(main())


def test_the_configured_sample_limit_reaches_the_store(tmp_path, models_dir, test_data):
    """learn_max_bytes_per_model from edgetpud.toml bounds what one model keeps; nothing of a refused call stays."""
    from edgetpud.daemon.errors import ResourceExhaustedError
    from edgetpud.daemon.learning import SampleBatch

    async def main():
        svc = make_service(tmp_path, models_dir, learn_max_bytes_per_model=3 * 256 * 4)
        await svc.start()
        try:
            rng = np.random.default_rng(0)
            await svc.learning.add_samples(SMALL, [SampleBatch("a", embeddings=list(rng.random((2, 256))))])
            with pytest.raises(ResourceExhaustedError, match="learn_max_bytes_per_model"):
                await svc.learning.add_samples(SMALL, [SampleBatch("b", embeddings=list(rng.random((2, 256))))])
            assert [c.label for c in svc.learning.view(SMALL).classes if c.source == "imprinted"] == ["a"]
        finally:
            await svc.stop()
    run(main())


def test_an_uploaded_model_is_served_again_by_the_next_start(tmp_path, test_data):
    # Its file stayed in state_dir/uploads, but the restarted daemon did not serve it.
    empty = tmp_path / "models"
    empty.mkdir()

    async def upload() -> None:
        svc = make_service(tmp_path, empty)
        await svc.start()
        try:
            await svc.load_model("up", data=(test_data / f"{SMALL}.tflite").read_bytes())
        finally:
            await svc.stop()

    async def restart() -> None:
        svc = make_service(tmp_path, empty)
        await svc.start()
        try:
            assert [(m.name, m.version, m.state) for m in svc.models()] == [("up", 1, "ready")]
            result = await svc.infer("up", "classify", cat(test_data))
            assert 283 in [c.id for c in result.payload[:3]]
        finally:
            await svc.stop()

    run(upload())
    run(restart())

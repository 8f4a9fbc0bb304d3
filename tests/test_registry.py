"""Registry unit tests with a fake pool: versions, leases and hot swap, folder scans, uploads."""
from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Dict, List, Set

import numpy as np
import pytest

from bundles import make_bundle
from fake_pool import FakePool
from edgetpud.daemon.errors import ModelError, NotFoundError
from edgetpud.daemon.registry import ModelState, Registry, VersionState, check_name, scan_models_dir
from edgetpud.hal.errors import DeviceUnavailableError, ModelRuntimeError

SMALL = "mobilenet_v1_0.25_128_quant"
LARGE = "mobilenet_v1_0.5_160_quant"


class FakeScheduler:
    def __init__(self) -> None:
        self.holders: Dict[str, Set[str]] = {}

    def placed(self, key, device):
        self.holders.setdefault(key, set()).add(device)

    def unplaced(self, key, device=None):
        self.holders.pop(key, None)


async def inline(fn, *args):
    return fn(*args)


def make(tmp_path: Path, devices=("mock:0", "mock:1")):
    pool, sched = FakePool(list(devices), outputs=[np.zeros(1)]), FakeScheduler()
    return pool, sched, Registry(pool, sched, tmp_path / "state", inline)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_names_are_checked():
    assert check_name("mobilenet_v1.2-x") == "mobilenet_v1.2-x"
    for bad in ("", "../x", "a/b", ".hidden", "with space", "x" * 200):
        with pytest.raises(ModelError):
            check_name(bad)


def test_scan_finds_folders_and_lone_files(tmp_path):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "model.tflite").write_bytes(b"")
    (tmp_path / "broken").mkdir()  # a .tflite but no model.tflite: a bundle that will fail, visibly
    (tmp_path / "broken" / "model_edgetpu.tflite").write_bytes(b"")
    (tmp_path / "images").mkdir()  # no .tflite at all: not a bundle
    (tmp_path / "images" / "cat.bmp").write_bytes(b"")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "model.tflite").write_bytes(b"")
    for name in ("a.tflite", "a_edgetpu.tflite", "b_edgetpu.tflite", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = scan_models_dir(tmp_path)
    assert found == {"bundle": tmp_path / "bundle", "broken": tmp_path / "broken", "a": tmp_path / "a.tflite",
                     "b": tmp_path / "b_edgetpu.tflite"}
    assert scan_models_dir(tmp_path / "missing") == {}


def test_load_places_and_warms_on_every_device_with_a_report(tmp_path, test_data):
    async def main():
        pool, sched, reg = make(tmp_path)
        state = await reg.load("cls", path=make_bundle(tmp_path / "m", test_data, "cls", SMALL, labels=None))
        assert state.version == 1 and state.state == "ready" and state.devices == ["mock:0", "mock:1"]
        assert sorted(pool.warmups) == [("mock:0", "cls@1"), ("mock:1", "cls@1")]
        assert sched.holders["cls@1"] == {"mock:0", "mock:1"}
        assert state.report["verdict"] == "full"
        d = state.to_dict()
        assert d["labels"] == 0 and d["inputs"][0]["dtype"] == "uint8" and d["problems"] == []
    asyncio.run(main())


def test_replace_keeps_the_old_version_until_its_last_lease_ends(tmp_path, test_data):
    async def main():
        pool, sched, reg = make(tmp_path)
        await reg.load("cls", path=make_bundle(tmp_path / "m", test_data, "cls", SMALL, labels=None))
        lease = reg.acquire("cls")
        state = await reg.load("cls", path=make_bundle(tmp_path / "m2", test_data, "cls", LARGE, labels=None))
        assert state.version == 2 and state.versions == [1, 2]
        assert reg.acquire("cls").version == 2  # new requests go to the new version
        assert "cls@1" in pool.loaded["mock:0"]  # the running request still has its version
        assert reg.acquire("cls", 1) is lease  # an explicit old version is still served while live
        reg.release(lease)
        reg.release(lease)
        await settle()
        assert pool.loaded == {"mock:0": {"cls@2"}, "mock:1": {"cls@2"}}
        assert "cls@1" not in sched.holders
        with pytest.raises(NotFoundError, match="no version 1"):
            reg.acquire("cls", 1)
    asyncio.run(main())


def test_failed_replacement_keeps_serving_the_old_version(tmp_path, test_data):
    async def main():
        pool, _, reg = make(tmp_path)
        await reg.load("cls", path=make_bundle(tmp_path / "m", test_data, "cls", SMALL, labels=None))
        pool.refuse_load = {d: ModelRuntimeError("unsupported op") for d in pool.slots}
        with pytest.raises(ModelError, match="cannot run"):
            await reg.load("cls", path=make_bundle(tmp_path / "m2", test_data, "cls", LARGE, labels=None))
        assert reg.state("cls").version == 1 and reg.state("cls").state == "ready"
        pool.refuse_load = {}
        assert (await reg.load("cls", path=tmp_path / "m" / "cls")).version == 3
    asyncio.run(main())


def test_partial_placement_is_a_problem_not_a_failure(tmp_path, test_data):
    async def main():
        pool, _, reg = make(tmp_path)
        pool.refuse_load = {"mock:1": DeviceUnavailableError("mock:1 is lost")}
        state = await reg.load("cls", path=make_bundle(tmp_path / "m", test_data, "cls", SMALL, labels=None))
        assert state.devices == ["mock:0"]
        assert any("mock:1" in p for p in state.problems)
    asyncio.run(main())


def test_folder_scan_loads_replaces_and_unloads(tmp_path, test_data):
    async def main():
        pool, _, reg = make(tmp_path, devices=("mock:0",))
        models = tmp_path / "models"
        make_bundle(models, test_data, "a", SMALL, labels=None)
        make_bundle(models, test_data, "b", SMALL, labels=None)
        (models / "junk").mkdir()
        (models / "junk" / "model.tflite").write_bytes(b"garbage-garbage-garbage")
        outcome = await reg.load_folder(models)
        assert outcome["a"] is None and outcome["b"] is None and "junk" in outcome and outcome["junk"]
        assert {s.name: s.state for s in reg.states()} == {"a": "ready", "b": "ready", "junk": "failed"}

        again = await reg.load_folder(models)  # unchanged bundles are not reloaded; a failed one is retried
        assert list(again) == ["junk"] and reg.state("a").version == 1
        shutil.copy(test_data / f"{LARGE}.tflite", models / "a" / "model.tflite")
        os.utime(models / "a" / "model.tflite", ns=(1, 1))
        shutil.rmtree(models / "b")
        shutil.rmtree(models / "junk")
        outcome = await reg.load_folder(models)
        assert outcome == {"a": None}
        await settle()
        assert {s.name: s.version for s in reg.states()} == {"a": 2}
        assert pool.loaded["mock:0"] == {"a@2"}
    asyncio.run(main())


def test_upload_is_stored_under_the_state_dir(tmp_path, test_data):
    async def main():
        _, _, reg = make(tmp_path)
        data = (test_data / f"{SMALL}.tflite").read_bytes()
        state = await reg.load("up", data=data)
        stored = Path(state.path)
        assert stored.is_relative_to(tmp_path / "state") and stored.name == "up.tflite"
        assert stored.read_bytes() == data
        with pytest.raises(ModelError):
            await reg.load("up", data=b"not a tflite file at all")
        assert reg.state("up").version == 1
        await reg.unload("up")
        with pytest.raises(NotFoundError):
            reg.state("up")
    asyncio.run(main())


def upload_folders(tmp_path: Path, name: str) -> List[str]:
    folder = tmp_path / "state" / "uploads" / name
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_replaced_uploads_leave_only_the_live_versions_folder(tmp_path, test_data):
    async def main():
        pool, _, reg = make(tmp_path)
        data = (test_data / f"{SMALL}.tflite").read_bytes()
        for _ in range(15):
            await reg.load("up", data=data)
            await settle()
        assert reg.state("up").versions == [15]
        assert upload_folders(tmp_path, "up") == ["v15"]  # replaced uploads must not slowly fill the state disk
        assert Path(reg.state("up").path).read_bytes() == data
        assert pool.loaded == {"mock:0": {"up@15"}, "mock:1": {"up@15"}}
    asyncio.run(main())


def test_an_unloaded_upload_leaves_no_folder(tmp_path, test_data):
    async def main():
        _, _, reg = make(tmp_path)
        await reg.load("up", data=(test_data / f"{SMALL}.tflite").read_bytes())
        await reg.load("other", data=(test_data / f"{SMALL}.tflite").read_bytes())
        await reg.unload("up")
        await settle()
        assert not (tmp_path / "state" / "uploads" / "up").exists()
        assert upload_folders(tmp_path, "other") == ["v1"]  # another model's upload is not touched
    asyncio.run(main())


def test_an_upload_that_never_served_leaves_no_folder(tmp_path, test_data):
    async def main():
        pool, _, reg = make(tmp_path)
        data = (test_data / f"{SMALL}.tflite").read_bytes()
        await reg.load("up", data=data)
        pool.refuse_load = {d: ModelRuntimeError("unsupported op") for d in pool.slots}
        with pytest.raises(ModelError, match="cannot run"):
            await reg.load("up", data=data)
        with pytest.raises(ModelError, match="cannot run"):
            await reg.load("never", data=data)
        await settle()
        assert upload_folders(tmp_path, "up") == ["v1"] and reg.state("up").version == 1
        assert not (tmp_path / "state" / "uploads" / "never").exists()
        # The caller had the error: a name that never served is not kept as a "failed" model to unload.
        with pytest.raises(NotFoundError, match="no model named 'never'"):
            reg.state("never")
        assert [s.name for s in reg.states()] == ["up"]
    asyncio.run(main())


def test_an_upload_serves_again_after_a_restart_with_its_version_and_labels(tmp_path, test_data):
    async def main():
        _, _, reg = make(tmp_path)
        data = (test_data / f"{SMALL}.tflite").read_bytes()
        await reg.load("up", data=data)
        await reg.load("up", data=data, labels=b"0 background\n1 tench\n")
        await settle()
        (tmp_path / "state" / "uploads" / "up" / "v1").mkdir()  # a version still retiring when the run ended

        _, _, again = make(tmp_path)  # the next start, on the same state folder
        assert await again.restore_uploads() == {"up": None}
        state = again.state("up")
        assert (state.state, state.version, state.label_count) == ("ready", 2, 2)
        assert upload_folders(tmp_path, "up") == ["v2"]
        assert (await again.load("up", data=data)).version == 3  # numbers go on: v2's folder is not overwritten
        await settle()
        assert upload_folders(tmp_path, "up") == ["v3"]
        await again.unload("up")
        await settle()
        _, _, third = make(tmp_path)
        assert await third.restore_uploads() == {} and third.states() == []  # unloaded: not served again
    asyncio.run(main())


def test_a_stored_upload_that_no_longer_loads_is_listed_until_unloaded(tmp_path, test_data):
    async def main():
        _, _, reg = make(tmp_path)
        stored = Path((await reg.load("up", data=(test_data / f"{SMALL}.tflite").read_bytes())).path)
        stored.write_bytes(stored.read_bytes()[:4096])

        _, _, again = make(tmp_path)
        assert "is truncated" in (await again.restore_uploads())["up"]
        await again.load_folder(tmp_path / "no-models")  # a rescan does not forget it
        assert again.state("up").state == "failed" and stored.exists()
        await again.unload("up")
        assert not (tmp_path / "state" / "uploads" / "up").exists()
    asyncio.run(main())


def test_labels_given_with_a_load_replace_the_bundles_own(tmp_path, test_data):
    async def main():
        _, _, reg = make(tmp_path)
        bundle = make_bundle(tmp_path / "m", test_data, "cls", SMALL)
        assert (await reg.load("cls", path=bundle)).label_count == 1001
        assert (await reg.load("cls", path=bundle, labels=b"0 cat\n1 dog\n")).label_count == 2
        with pytest.raises(ModelError, match="the labels file sent with the load: id 0 appears twice"):
            await reg.load("cls", path=bundle, labels=b"0 cat\n0 dog\n")
        with pytest.raises(ModelError, match="not UTF-8"):
            await reg.load("cls", path=bundle, labels=b"\xff\xfe\x00")
        assert reg.state("cls").version == 2
    asyncio.run(main())


def test_a_version_loaded_from_a_path_is_never_deleted(tmp_path, test_data):
    async def main():
        _, _, reg = make(tmp_path)
        await reg.load("cls", data=(test_data / f"{SMALL}.tflite").read_bytes())
        outside = make_bundle(tmp_path / "m", test_data, "cls", SMALL, labels=None)
        # under state_dir, not an upload
        inside = make_bundle(tmp_path / "state" / "mine", test_data, "cls", LARGE, labels=None)
        await reg.load("cls", path=outside)
        await reg.load("cls", path=inside)
        await settle()
        await reg.unload("cls")
        await settle()
        assert not (tmp_path / "state" / "uploads" / "cls").exists()  # the upload that was replaced went
        assert (outside / "model.tflite").read_bytes() == (test_data / f"{SMALL}.tflite").read_bytes()
        assert (inside / "model.tflite").read_bytes() == (test_data / f"{LARGE}.tflite").read_bytes()
        reg.uploads.delete(outside)  # even asked directly, only state_dir/uploads/NAME/vN is deleted
        reg.uploads.delete(tmp_path / "state" / "uploads")
        assert (outside / "model.tflite").is_file() and (tmp_path / "state" / "uploads").is_dir()
    asyncio.run(main())


def test_an_upload_in_use_keeps_its_folder_until_its_last_request_ends(tmp_path, test_data):
    async def main():
        pool, _, reg = make(tmp_path)
        data = (test_data / f"{SMALL}.tflite").read_bytes()
        await reg.load("up", data=data)
        lease = reg.acquire("up")
        await reg.load("up", data=(test_data / f"{LARGE}.tflite").read_bytes())
        await settle()
        assert upload_folders(tmp_path, "up") == ["v1", "v2"]  # the in-flight request still reads version 1
        assert Path(lease.bundle.path).read_bytes() == data and "up@1" in pool.loaded["mock:0"]
        reg.release(lease)
        await settle()
        assert upload_folders(tmp_path, "up") == ["v2"]
        assert pool.loaded == {"mock:0": {"up@2"}, "mock:1": {"up@2"}}
    asyncio.run(main())


def test_a_failure_to_delete_an_upload_is_a_warning(tmp_path, test_data, monkeypatch, caplog):
    async def main():
        pool, _, reg = make(tmp_path)
        await reg.load("up", data=(test_data / f"{SMALL}.tflite").read_bytes())

        def refuse(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))
        monkeypatch.setattr("edgetpud.daemon.registry.store.shutil.rmtree", refuse)
        await reg.unload("up")
        await settle()
        assert pool.loaded == {"mock:0": set(), "mock:1": set()}  # released all the same
        assert any(r.levelname == "WARNING" and "could not delete" in r.getMessage() for r in caplog.records)
    asyncio.run(main())


def test_version_states_are_printed_as_the_api_strings():
    assert [s.value for s in VersionState] == ["loading", "ready", "retiring", "unloaded", "failed"]
    assert [s for s in VersionState if s.leasable] == [VersionState.READY, VersionState.RETIRING]
    shown = ModelState.failed("m", "/models/m", "not a model").to_dict()
    assert type(shown["state"]) is str and shown["state"] == "failed" and shown["error"] == "not a model"
    assert f"{VersionState.RETIRING}" == "retiring"  # log lines and messages read the same as before

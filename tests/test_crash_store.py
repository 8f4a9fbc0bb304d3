"""scripts/crash_store.py: its checker catches a lost sample, and a short run of SIGKILLs loses none.

The checker is tested on a store built here, so that a checker which could never
report a loss would fail; the slow test then runs the script itself against the
real daemon and the real embedding extractor.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edgetpud.daemon.learn.head import LinearHead
from edgetpud.daemon.learn.store import Store, StoreError, content_hash

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "crash_store.py"
BASE = content_hash(b"a base model")


def load_script() -> ModuleType:
    """The script as a module (it is not a package), to call its checker directly."""
    spec = importlib.util.spec_from_file_location("crash_store", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


crash = load_script()


def head_of(labels: list) -> LinearHead:
    return LinearHead(np.ones((crash.DIM, len(labels)), np.float32), np.zeros(len(labels), np.float32),
                      tuple(labels), ("imprinted",) * len(labels), True)


def make_store(path: Path) -> tuple:
    """A store like the daemon's after two acknowledged calls: returns (fingerprints per label, head versions)."""
    rng = np.random.default_rng(1)
    vectors = rng.random((3, crash.DIM), dtype=np.float32) + 0.1
    photo = b"\xff\xd8 not really a jpeg, the store keeps any bytes"
    store = Store(path)
    try:
        v1 = store.add_samples_and_head(crash.MODEL, [("cat", vectors, [None] * 3)], BASE, head_of(["cat"]),
                                        "imprinting")
        v2 = store.add_samples_and_head(crash.MODEL, [("dog", vectors[:1] * 2, [photo])], BASE,
                                        head_of(["cat", "dog"]), "imprinting")
    finally:
        store.close()
    expected = {"cat": Counter(crash.fingerprint_embedding(v) for v in vectors),
                "dog": Counter([crash.fingerprint_image(photo)])}
    return expected, [v1, v2]


def snapshot(expected: dict, heads: list, in_flight: tuple = ()) -> object:
    return crash.Snapshot(expected=expected, fresh=expected, in_flight=list(in_flight), max_head=max(heads),
                          heads=heads)


def test_an_intact_store_passes_and_fingerprints_every_sample(tmp_path: Path) -> None:
    path = tmp_path / "learning.sqlite3"
    expected, heads = make_store(path)
    state = crash.read_store(path)
    assert state.samples == expected  # an image sample is known by its bytes, not its embedding
    assert state.heads == heads and state.current == heads[-1] and state.current_labels == ("cat", "dog")
    verdict = crash.check(snapshot(expected, heads), state)
    assert (verdict.lost, verdict.found, verdict.head, verdict.failures) == (0, 4, "old", [])


def test_a_deleted_acknowledged_sample_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "learning.sqlite3"
    expected, heads = make_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM samples WHERE id = (SELECT MIN(id) FROM samples WHERE label = 'cat')")
    conn.close()
    verdict = crash.check(snapshot(expected, heads), crash.read_store(path))
    assert verdict.lost == 1 and verdict.found == 3
    assert verdict.failures == ["label cat: 1 acknowledged samples missing"]


def test_only_a_whole_call_in_flight_may_add_unacknowledged_samples(tmp_path: Path) -> None:
    path = tmp_path / "learning.sqlite3"
    expected, heads = make_store(path)
    state = crash.read_store(path)
    acked_cat = {"cat": expected["cat"]}  # the dog call's reply never came back
    dog = crash.Call("add", "dog", tuple(expected["dog"]))
    committed = crash.check(crash.Snapshot(acked_cat, acked_cat, [dog], heads[0], heads[:1]), state)
    assert (committed.lost, committed.committed_in_flight, committed.head, committed.failures) == (0, 1, "new", [])
    nobody = crash.check(crash.Snapshot(acked_cat, acked_cat, [], heads[0], heads[:1]), state)
    assert any("nobody acknowledged" in f for f in nobody.failures)
    assert any("newer than the last acknowledged" in f for f in nobody.failures)
    half = crash.Call("add", "dog", tuple(expected["dog"]) + ("e:one that never arrived",))
    partial = crash.check(crash.Snapshot(acked_cat, acked_cat, [half], heads[0], heads[:1]), state)
    assert any("stored in part" in f for f in partial.failures)


def test_a_head_older_than_acknowledged_and_a_missing_version_fail(tmp_path: Path) -> None:
    path = tmp_path / "learning.sqlite3"
    expected, heads = make_store(path)
    store = Store(path)
    store.set_current(crash.MODEL, heads[0])
    store.close()
    verdict = crash.check(snapshot(expected, heads + [heads[-1] + 1]), crash.read_store(path))
    assert verdict.head == "older"
    assert f"acknowledged head version {heads[-1] + 1} is not in the store" in verdict.failures


def test_a_removal_in_flight_may_have_emptied_its_class(tmp_path: Path) -> None:
    path = tmp_path / "learning.sqlite3"
    expected, heads = make_store(path)
    store = Store(path)
    v3 = store.remove_class_and_set_head(crash.MODEL, "dog", head_of(["cat"]), "imprinting", BASE)
    store.close()
    state = crash.read_store(path)
    removing = crash.check(snapshot(expected, heads, [crash.Call("remove", "dog")]), state)
    assert (removing.lost, removing.committed_in_flight, removing.failures) == (0, 1, [])
    assert removing.head == "new" and state.current == v3
    not_asked = crash.check(snapshot(expected, heads), state)
    assert not_asked.lost == 1


def test_a_damaged_store_is_reported_not_read(tmp_path: Path) -> None:
    path = tmp_path / "learning.sqlite3"
    make_store(path)
    with path.open("r+b") as f:
        f.seek(0)
        f.write(b"garbage" * 16)
    with pytest.raises(StoreError):
        crash.read_store(path)


@pytest.mark.slow
def test_three_sigkills_lose_nothing(test_data: Path) -> None:
    """Three kills at seeded moments, the real daemon and model: every acknowledged sample and head survives."""
    env = {**os.environ, "EDGETPUD_TEST_DATA": str(test_data)}
    done = subprocess.run([sys.executable, str(SCRIPT), "--trials", "3", "--seed", "0", "--json"],
                          capture_output=True, text=True, timeout=100, env=env)
    assert done.stdout, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["failures"] == [], report
    assert report["lost"] == 0, report
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["trials"] == report["kills"] == 3
    assert report["acknowledged_samples"] > 0 and report["acknowledged_heads"] > 0
    assert report["samples_found"] + report["acknowledged_samples_removed"] == report["acknowledged_samples"]
    assert report["heads_seen"]["old"] + report["heads_seen"]["new"] == 3
    assert sum(report["kill_moments"].values()) == 3

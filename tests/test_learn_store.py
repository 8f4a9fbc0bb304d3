"""The learning store: what it keeps, its limits, concurrent adds, refused files, and SIGKILL at any instant."""
from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

from edgetpud.daemon.errors import InvalidArgumentError, NotFoundError, PreconditionError, ResourceExhaustedError
from edgetpud.daemon.learn.head import LinearHead
from edgetpud.daemon.learn.store import SCHEMA_VERSION, STORE_FILE, Store, StoreError, content_hash, store_path

BASE = content_hash(b"base model v1")
OTHER_BASE = content_hash(b"base model v2")


def emb(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def a_head(labels, dim: int = 8, value: float = 1.0) -> LinearHead:
    k = len(labels)
    return LinearHead(np.full((dim, k), value, np.float32), np.zeros(k, np.float32), tuple(labels),
                      ("imprinted",) * k, True, {"note": "test"})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return store_path(tmp_path / "state")


@pytest.fixture
def store(path: Path):
    with Store(path) as s:
        yield s


def test_content_hash_of_bytes_and_file(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(3 * 1024 * 1024 + 17)  # more than one read chunk
    f = tmp_path / "model.tflite"
    f.write_bytes(data)
    assert content_hash(data) == content_hash(f) == content_hash(str(f)) == hashlib.sha256(data).hexdigest()
    with pytest.raises(NotFoundError, match="missing.tflite"):
        content_hash(tmp_path / "missing.tflite")


def test_new_store_is_wal_with_schema_version(path: Path, store: Store) -> None:
    assert path.name == STORE_FILE and path.is_file()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".new")] == []


def test_samples_round_trip_in_class_order(store: Store) -> None:
    a, b = emb(3, seed=1), emb(2, seed=2)
    ids_a = store.add_samples("m", "cat", a, [b"jpeg1", None, b"jpeg3"], BASE)
    ids_b = store.add_samples("m", "dog", b, [None, None], BASE)
    more = store.add_samples("m", "cat", a[:1], [b"x"], BASE)
    assert ids_a + ids_b + more == sorted(set(ids_a + ids_b + more))
    assert store.class_counts("m") == {"cat": 4, "dog": 2}
    got = store.embeddings("m")
    assert list(got) == ["cat", "dog"]
    np.testing.assert_array_equal(got["cat"], np.concatenate([a, a[:1]]))
    np.testing.assert_array_equal(got["dog"], b)
    assert got["cat"].dtype == np.float32 and got["cat"].flags.writeable
    assert store.used_bytes("m") == 6 * 8 * 4 + len(b"jpeg1jpeg3x")
    assert store.models() == ["m"] and store.class_counts("other") == {} and store.embeddings("other") == {}


def test_bad_samples_are_refused_and_nothing_lands(store: Store) -> None:
    with pytest.raises(InvalidArgumentError, match="2 embeddings came with 1 images"):
        store.add_samples("m", "a", emb(2), [None], BASE)
    bad = emb(2)
    bad[1, 3] = np.nan
    with pytest.raises(InvalidArgumentError, match="NaN"):
        store.add_samples("m", "a", bad, [None, None], BASE)
    with pytest.raises(InvalidArgumentError, match="shape"):
        store.add_samples("m", "a", np.zeros((2, 2, 2)), [None, None], BASE)
    with pytest.raises(InvalidArgumentError, match="label"):
        store.add_samples("m", "", emb(1), [None], BASE)
    with pytest.raises(InvalidArgumentError, match="sha256"):
        store.add_samples("m", "a", emb(1), [None], "not-a-hash")
    with pytest.raises(InvalidArgumentError, match="image 1"):
        store.add_samples("m", "a", emb(2), [b"ok", b""], BASE)
    store.add_samples("m", "a", emb(1, dim=8), [None], BASE)
    with pytest.raises(InvalidArgumentError, match="8 values"):
        store.add_samples("m", "b", emb(1, dim=4), [None], BASE)
    assert store.class_counts("m") == {"a": 1}


def test_class_cap_refuses_the_whole_call(path: Path) -> None:
    with Store(path, max_samples_per_class=5) as store:
        store.add_samples("m", "a", emb(3), [None] * 3, BASE)
        with pytest.raises(ResourceExhaustedError, match=r"'a'.*has 3 samples.*adds 3.*at most 5"):
            store.add_samples("m", "a", emb(3), [None] * 3, BASE)
        assert store.class_counts("m") == {"a": 3}
        store.add_samples("m", "a", emb(2), [None] * 2, BASE)
        store.add_samples("m", "b", emb(5), [None] * 5, BASE)  # the cap is per class
        assert store.class_counts("m") == {"a": 5, "b": 5}


def test_size_limit_names_limit_use_and_remedy(path: Path) -> None:
    limit = 10_000
    with Store(path, max_bytes_per_model=limit) as store:
        store.add_samples("m", "a", emb(2), [b"\0" * 4000, b"\0" * 4000], BASE)  # 8064 bytes
        with pytest.raises(ResourceExhaustedError) as info:
            store.add_samples("m", "b", emb(1), [b"\0" * 2000], BASE)
        text = str(info.value)
        for part in ("10000", "8064", "classes remove", "learn_max_bytes_per_model", "edgetpud.toml"):
            assert part in text
        assert store.class_counts("m") == {"a": 2}
        store.add_samples("other", "b", emb(1), [b"\0" * 2000], BASE)  # the limit is per model
        store.add_samples("m", "b", emb(1), [b"\0" * 1000], BASE)  # still fits: 8064 + 1032
        assert store.used_bytes("m") == 8064 + 1032


def test_reembedding_only_stale_samples_with_images(store: Store) -> None:
    ids = store.add_samples("m", "a", emb(3, dim=8), [b"i0", None, b"i2"], BASE)
    store.add_samples("m", "b", emb(1, dim=8, seed=5), [b"fresh"], OTHER_BASE)
    stale = store.stale_samples("m", OTHER_BASE)
    assert [(s.id, s.label, s.image) for s in stale] == [(ids[0], "a", b"i0"), (ids[2], "a", b"i2")]
    assert [s.id for s in store.stale_samples("m", OTHER_BASE, limit=1)] == [ids[0]]
    new = emb(2, dim=8, seed=9)
    assert store.update_embeddings("m", [ids[0], ids[2], 999_999], np.concatenate([new, new[:1]]), OTHER_BASE) == 2
    assert store.stale_samples("m", OTHER_BASE) == []
    np.testing.assert_array_equal(store.embeddings("m", OTHER_BASE)["a"], new)
    np.testing.assert_array_equal(store.embeddings("m", BASE)["a"], emb(3, dim=8)[1:2])


def test_mixed_sizes_need_a_base(store: Store) -> None:
    store.add_samples("m", "a", emb(1, dim=8), [None], BASE)
    store.add_samples("m", "a", emb(1, dim=4), [None], OTHER_BASE)
    with pytest.raises(PreconditionError, match="re-embed"):
        store.embeddings("m")
    assert store.embeddings("m", OTHER_BASE)["a"].shape == (1, 4)


def test_remove_class_and_model(store: Store) -> None:
    store.add_samples("m", "a", emb(2), [None, b"x"], BASE)
    store.add_samples("m", "b", emb(1), [None], BASE)
    store.add_samples("n", "a", emb(1), [None], BASE)
    store.add_head("m", a_head(["a", "b"]), "imprinting", BASE)
    assert store.remove_class("m", "a") == 2
    assert store.remove_class("m", "a") == 0
    assert store.class_counts("m") == {"b": 1} and store.class_counts("n") == {"a": 1}
    assert store.remove_model("m") == (1, 1)
    assert store.models() == ["n"] and store.current_head("m") is None and store.list_heads("m") == []
    assert store.add_head("m", a_head(["z"]), "imprinting", BASE) == 2  # versions are never reused


def test_head_versions_current_and_restore(store: Store) -> None:
    assert store.current_head("m") is None
    v1 = store.add_head("m", a_head(["a"], value=1), "imprinting", BASE)
    v2 = store.add_head("m", a_head(["a", "b"], value=2), "backprop", OTHER_BASE)
    v3 = store.add_head("m", a_head(["c"], value=3), "imprinting", BASE, make_current=False)
    assert (v1, v2, v3) == (1, 2, 3)
    version, head, meta = store.current_head("m")
    assert version == 2 and meta.method == "backprop" and meta.base_hash == OTHER_BASE and meta.current
    assert head.labels == ("a", "b") and float(head.weights[0, 0]) == 2 and head.info == {"note": "test"}
    listed = store.list_heads("m")
    assert [(h.version, h.labels, h.current) for h in listed] == [(1, ("a",), False), (2, ("a", "b"), True),
                                                                  (3, ("c",), False)]
    assert all(h.created > 0 for h in listed)
    store.set_current("m", 1)
    assert store.current_head("m")[0] == 1
    assert store.head("m", 3)[0].labels == ("c",)
    with pytest.raises(NotFoundError, match="no head version 7; its versions are 1, 2, 3"):
        store.set_current("m", 7)
    with pytest.raises(NotFoundError, match="has no heads"):
        store.set_current("unknown", 1)
    assert store.current_head("m")[0] == 1
    assert store.models() == ["m"]


def test_everything_survives_reopening(path: Path) -> None:
    with Store(path) as store:
        ids = store.add_samples("m", "a", emb(2), [b"img", None], BASE)
        store.add_head("m", a_head(["a"]), "imprinting", BASE)
        store.add_head("m", a_head(["a"], value=5), "backprop", BASE)
        store.set_current("m", 1)
    with Store(path) as store:
        assert store.class_counts("m") == {"a": 2}
        assert [s.id for s in store.stale_samples("m", OTHER_BASE)] == ids[:1]
        assert store.current_head("m")[0] == 1 and len(store.list_heads("m")) == 2


@pytest.mark.parametrize("shared", [True, False], ids=["one-store-two-threads", "two-stores"])
def test_concurrent_adds_to_one_class_count_both_and_never_pass_the_cap(path: Path, shared: bool) -> None:
    cap, batches, size = 200, 15, 10  # each thread alone would fit; together they ask for 300
    stores = [Store(path, max_samples_per_class=cap)]
    stores.append(stores[0] if shared else Store(path, max_samples_per_class=cap))
    barrier = threading.Barrier(2)
    accepted: List[List[int]] = [[], []]
    refused = [0, 0]

    def add(k: int) -> None:
        barrier.wait()
        for i in range(batches):
            try:
                accepted[k] += stores[k].add_samples("m", "same", emb(size, seed=100 * k + i), [None] * size, BASE)
            except ResourceExhaustedError:
                refused[k] += 1

    threads = [threading.Thread(target=add, args=(k,)) for k in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert len(accepted[0]) + len(accepted[1]) == cap
        assert refused[0] + refused[1] == (2 * batches * size - cap) // size
        assert stores[0].class_counts("m") == {"same": cap}
        assert sorted(accepted[0] + accepted[1]) == sorted(set(accepted[0] + accepted[1]))
    finally:
        for s in {id(s): s for s in stores}.values():
            s.close()


def test_concurrent_adds_below_the_cap_are_all_counted(path: Path) -> None:
    with Store(path) as one, Store(path) as two:
        barrier = threading.Barrier(2)

        def add(store: Store, seed: int) -> None:
            barrier.wait()
            for i in range(40):
                store.add_samples("m", "same", emb(2, seed=seed + i), [None, b"i"], BASE)

        threads = [threading.Thread(target=add, args=(s, k * 1000)) for k, s in enumerate((one, two))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert one.class_counts("m") == two.class_counts("m") == {"same": 160}


# ---------------------------------------------------------------- refused files


def assert_refused_untouched(path: Path, *patterns: str) -> None:
    before = path.read_bytes()
    with pytest.raises(StoreError) as info:
        Store(path)
    assert path.read_bytes() == before
    text = str(info.value)
    assert str(path) in text and "never deletes" in text
    for pattern in patterns:
        assert pattern in text, text
    assert isinstance(info.value, PreconditionError)


def a_real_store(path: Path, samples: int = 60) -> None:
    with Store(path) as store:
        for i in range(samples // 5):
            store.add_samples("m", f"c{i}", emb(5, dim=256, seed=i), [random.Random(i).randbytes(3000)] * 5, BASE)
        store.add_head("m", a_head(["c0"]), "imprinting", BASE)


def test_random_bytes_are_refused_untouched(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(random.Random(1).randbytes(64 * 1024))
    assert_refused_untouched(path, "not a readable SQLite database", "move it aside")


def test_truncated_store_is_refused_untouched(path: Path) -> None:
    a_real_store(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_refused_untouched(path, "move it aside")


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_overwritten_store_is_refused_untouched(path: Path, where: float) -> None:
    a_real_store(path)
    data = bytearray(path.read_bytes())
    page = 4096
    at = int(len(data) * where) // page * page
    data[at: at + page] = random.Random(at).randbytes(page)
    path.write_bytes(bytes(data))
    assert_refused_untouched(path, "damaged", "move it aside")


def test_newer_schema_is_refused_untouched(path: Path) -> None:
    a_real_store(path, samples=5)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    assert_refused_untouched(path, "newer edgetpud", f"schema {SCHEMA_VERSION + 1}")


def test_foreign_sqlite_file_is_refused_untouched(path: Path) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO photos (name) VALUES ('x')")
    conn.commit()
    conn.close()
    assert_refused_untouched(path, "another program")


def test_damaged_head_blob_is_a_store_error(store: Store, path: Path) -> None:
    store.add_head("m", a_head(["a"]), "imprinting", BASE)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE heads SET head = x'00010203'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="damaged head"):
        store.current_head("m")


def test_empty_file_becomes_a_store(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.touch()
    with Store(path) as store:
        assert store.add_samples("m", "a", emb(1), [None], BASE) == [1]


def test_closed_store_says_so(path: Path) -> None:
    store = Store(path)
    store.class_counts("m")  # this thread has a connection now
    store.close()
    errors: List[Exception] = []

    def call() -> None:
        try:
            store.class_counts("m")
        except PreconditionError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)  # a thread that never had a connection
    thread.start()
    thread.join(10)
    with pytest.raises(PreconditionError, match="closed"):
        store.class_counts("m")
    assert len(errors) == 1 and "closed" in str(errors[0])


# ---------------------------------------------------------------- SIGKILL

CHILD = r"""
import sys
import numpy as np
from edgetpud.daemon.learn.head import LinearHead
from edgetpud.daemon.learn.store import Store
store = Store(sys.argv[1])
base, i = sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
while True:
    x = np.full((3, 16), i, np.float32)
    ids = store.add_samples("m", f"c{i}", x, [bytes([i % 256]) * 2000, None, b"img"], base)
    print("S", i, *ids, flush=True)
    if i % 3 == 0:
        head = LinearHead(np.full((16, 1), i, np.float32), np.zeros(1, np.float32), (f"c{i}",),
                          ("imprinted",), True)
        print("H", store.add_head("m", head, "imprinting", base), i, flush=True)
    i += 1
"""


@pytest.mark.slow  # starts processes
def test_sigkill_at_random_moments_keeps_every_acknowledged_call(path: Path) -> None:
    rng = random.Random(12)
    Store(path).close()
    acknowledged: dict = {}  # label -> ids
    heads: dict = {}  # version -> i of its label
    started = time.monotonic()
    for trial in range(20):
        start = trial * 100_000
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), BASE, str(start)],
                                 stdout=subprocess.PIPE, text=True)
        lines: List[str] = []
        reader = threading.Thread(target=lambda: lines.extend(child.stdout))
        reader.start()
        while not lines and child.poll() is None:
            time.sleep(0.005)
        assert lines and lines[0] == "ready\n", "the child did not open the store"
        time.sleep(rng.uniform(0.0, 0.12))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        reader.join(10)
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        for line in lines[1:]:
            if not line.endswith("\n"):
                continue  # cut by the kill: not an acknowledgement
            kind, *fields = line.split()
            if kind == "S":
                acknowledged[f"c{fields[0]}"] = [int(x) for x in fields[1:]]
            elif kind == "H":
                heads[int(fields[0])] = int(fields[1])
        with Store(path) as store:
            counts = store.class_counts("m")
            assert set(acknowledged) <= set(counts), "an acknowledged call's samples are missing"
            assert set(counts.values()) == {3}, "a call's samples landed in part"
            stored = store.embeddings("m")
            for label, ids in acknowledged.items():
                assert float(stored[label][0, 0]) == int(label[1:])
            listed = [h.version for h in store.list_heads("m")]
            assert listed == list(range(1, len(listed) + 1))
            assert set(heads) <= set(listed)
            current = store.current_head("m")
            if heads:
                last = max(heads)
                # the last acknowledged head, or a newer one whose call was cut before its ack was read
                # (in this trial or an earlier one): every head here was made current when stored
                assert current is not None and current[0] == listed[-1] >= last, "the head is neither old nor new"
                assert current[1].labels[0] in counts
                assert float(current[1].weights[0, 0]) == int(current[1].labels[0][1:])
    assert len(acknowledged) > 20 and heads, f"too few acknowledged calls to prove much: {len(acknowledged)}"
    assert time.monotonic() - started < 30

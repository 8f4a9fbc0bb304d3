#!/usr/bin/env python3
"""Crash durability of on-device retraining: SIGKILL the daemon while it learns, then count what survived.

The daemon serves the Coral embedding extractor on a mock device with a fresh
``--state-dir``. Each trial runs two client threads that add samples (seeded
random embeddings of the model's 1024 values, now and then a real photo) to
classes of their own, removing a class before it passes the 200-sample cap, and
a third that trains the head by backprop. The script keeps a ledger of every
call that returned OK: per label the fingerprint of each sample (sha1 of its
embedding bytes, or of its image bytes), and every head version acknowledged.

At a seeded random moment (while samples are added, during a training, or within
a few milliseconds of an acknowledgement) it SIGKILLs the daemon's whole process
group (the daemon and its device workers), and then, with the daemon down:

- ``Store(path)`` opens (a damaged store would raise StoreError);
- every acknowledged sample is in it, byte for byte (lost must be 0); samples
  that nobody acknowledged may appear only as the whole of a call in flight;
- every acknowledged head version is stored, and the current head is the last
  acknowledged one ("old") or a newer one made by a call in flight ("new");

and after restarting it on the same state dir: it serves, lists the same
classes and current head as the store, and ``classify`` answers with one of the
stored labels. The next trial continues on that daemon and that store.

Prints one JSON document (``--json``: only that, else a line per trial first).
``acknowledged_samples`` counts the samples of calls that returned OK;
``samples_found`` those of them found after the next kill, so that it equals
``acknowledged_samples`` minus ``acknowledged_samples_removed`` (removed on purpose,
by an acknowledged ``remove_class``) when ``lost`` is 0. ``samples_checked`` counts
every acknowledged sample each check found, earlier trials' again. ``heads_seen``:
per kill, whether the current head was the last acknowledged one (old) or a newer
one from a call in flight (new). ``classes_not_served`` counts checks where a
class with samples was missing from the current head (not a crash failure; see
the note in the report).

Usage: EDGETPUD_TEST_DATA=../shared/coral-test-data .venv/bin/python scripts/crash_store.py \
           [--trials N] [--seed S] [--json] [--keep]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # we only fork to exec the daemon

from edgetpud.daemon.client import Client, ClientError  # noqa: E402
from edgetpud.daemon.learn.store import SCHEMA_VERSION, Store, store_path  # noqa: E402

MODEL = "embedding_extractor"
BASE_FILE = "mobilenet_v1_1.0_224_quant_embedding_extractor"
DIM = 1024
#: Coral's cap, which the daemon enforces per class.
MAX_PER_CLASS = 200
#: The smaller photos of the test data: an image call costs one inference each on the mock device.
PHOTOS = ("face.jpg", "owl.jpg", "pets.jpg", "hot_dog.jpg")
#: Each adding thread owns its labels, so its ledger alone says what a label must hold.
THREAD_LABELS = {"adder-a": ("a0", "a1", "a2", "a3"), "adder-b": ("b0", "b1", "b2", "b3")}
KILL_MODES = ("adds", "training", "after_ack")
DEFAULT_TEST_DATA = Path(__file__).resolve().parents[2] / "shared" / "coral-test-data"


def fingerprint_embedding(vector: np.ndarray) -> str:
    """What identifies an embedding sample: its float32 bytes, which the store keeps exactly."""
    return "e:" + hashlib.sha1(np.ascontiguousarray(vector, np.float32).tobytes()).hexdigest()[:20]


def fingerprint_image(data: bytes) -> str:
    """What identifies an image sample: the encoded bytes the store keeps for re-embedding."""
    return "i:" + hashlib.sha1(data).hexdigest()[:20]


# ----------------------------------------------------------------- the daemon


class Daemon:
    """edgetpud on ``mock:1`` in its own process group, so one killpg takes its workers too."""

    def __init__(self, workdir: Path, test_data: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "edgetpud.sock"
        self.address = f"unix:{self.socket}"
        self.state_dir = workdir / "state"
        bundle = workdir / "models" / MODEL
        bundle.mkdir(parents=True)
        shutil.copyfile(test_data / f"{BASE_FILE}.tflite", bundle / "model.tflite")
        shutil.copyfile(test_data / f"{BASE_FILE}_edgetpu.tflite", bundle / "model_edgetpu.tflite")
        (bundle / "model.toml").write_text('task = "embed"\n')
        self.config = workdir / "edgetpud.toml"
        self.config.write_text("\n".join([
            'devices = ["mock:1"]', f'models_dir = "{workdir / "models"}"', f'state_dir = "{self.state_dir}"',
            f'listen = ["{self.address}"]', "grace_s = 5.0", 'log_level = "info"']) + "\n")
        self.log = workdir / "edgetpud.log"
        self.tmp = workdir / "tmp"  # the mock device's folder: a killed daemon cannot remove it
        self.tmp.mkdir()
        self.process: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until it is ready with the model loaded; returns the seconds it took.

        Raises:
            RuntimeError: it exited, or was not ready in time (with the end of its log).
        """
        started = time.monotonic()
        with self.log.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen([sys.executable, "-m", "edgetpud.daemon.main", "--config",
                                             str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(self.tmp)},
                                            cwd=self.workdir,
                                            start_new_session=True)
        self.starts += 1
        with Client(self.address, timeout=5) as client:
            while time.monotonic() - started < timeout:
                if self.process.poll() is not None:
                    raise RuntimeError(f"edgetpud exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    if client.status().ready and any(m.name == MODEL and m.state == "ready"
                                                     for m in client.models()):
                        return time.monotonic() - started
                except ClientError:
                    pass
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"edgetpud not ready after {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group and wait until none of it runs any more."""
        if self.process is None:
            return
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)
        end = time.monotonic() + 10
        while group_alive(pgid):
            if time.monotonic() > end:
                raise RuntimeError(f"processes of group {pgid} still run 10 s after SIGKILL")
            time.sleep(0.01)

    def stop(self) -> int:
        """SIGTERM (a clean stop at the end of the run); SIGKILL if it hangs. Returns its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process is not None else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies awaiting their reaper do not count)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


# ----------------------------------------------------------------- the ledger


@dataclass
class Call:
    """A call sent and not yet acknowledged: what it may have committed when the daemon died."""

    kind: str  # "add", "remove" or "train"
    label: str = ""
    fingerprints: Tuple[str, ...] = ()


@dataclass
class Snapshot:
    """The ledger at the instant of the kill."""

    expected: Dict[str, Counter]
    fresh: Dict[str, Counter]
    in_flight: List[Call]
    max_head: Optional[int]
    heads: List[int]


class Ledger:
    """What the daemon acknowledged, kept under one lock that the kill also takes.

    Taking the lock around the kill makes the snapshot exact: a reply recorded
    before it is acknowledged, anything later counts as still in flight.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expected: Dict[str, Counter] = {}  # label -> fingerprints the store must hold now
        self.fresh: Dict[str, Counter] = {}  # the part of ``expected`` acknowledged in this trial
        self.in_flight: Dict[str, Call] = {}  # thread name -> its call
        self.heads: List[int] = []  # every head version acknowledged
        self.known_head: Optional[int] = None  # the store's current head when this trial began
        self.killed = False
        self.acked = threading.Condition(self.lock)
        self.ack_count = 0
        self.acknowledged_samples = 0
        self.removed_samples = 0  # acknowledged, then removed by an acknowledged remove_class in the same trial
        self.acknowledged_calls = 0
        self.removals = 0
        self.trainings = 0
        self.training_since: Optional[float] = None
        self.training_seconds: List[float] = []
        self.failures: List[str] = []

    def count(self, label: str) -> int:
        with self.lock:
            return sum(self.expected.get(label, Counter()).values())

    def labels_with_samples(self) -> List[str]:
        with self.lock:
            return [label for label, fps in self.expected.items() if sum(fps.values())]

    def begin(self, thread: str, call: Call) -> bool:
        """Note a call before it is sent; False once the daemon was killed (the thread stops)."""
        with self.lock:
            if self.killed:
                return False
            self.in_flight[thread] = call
            if call.kind == "train":
                self.training_since = time.monotonic()
            return True

    def ack(self, thread: str, head_version: Optional[int]) -> None:
        """The call's reply came back OK: it is acknowledged unless the kill came first."""
        with self.lock:
            if self.killed:
                return
            call = self.in_flight.pop(thread)
            if call.kind == "add":
                self.expected.setdefault(call.label, Counter()).update(call.fingerprints)
                self.fresh.setdefault(call.label, Counter()).update(call.fingerprints)
                self.acknowledged_samples += len(call.fingerprints)
            elif call.kind == "remove":
                self.expected.pop(call.label, None)
                self.removed_samples += sum(self.fresh.pop(call.label, Counter()).values())
                self.removals += 1
            else:
                self.trainings += 1
                if self.training_since is not None:
                    self.training_seconds.append(time.monotonic() - self.training_since)
            if call.kind == "train":
                self.training_since = None
            if head_version is not None and head_version > 0:
                self.heads.append(head_version)
            self.acknowledged_calls += 1
            self.ack_count += 1
            self.acked.notify_all()

    def refused(self, thread: str, what: str) -> None:
        """The daemon answered with an error: nothing was stored, and a live daemon should not have refused."""
        with self.lock:
            call = self.in_flight.pop(thread, None)
            if call is not None and call.kind == "train":
                self.training_since = None
            if not self.killed:
                self.failures.append(what)

    def kill(self, daemon: Daemon) -> Snapshot:
        """SIGKILL the daemon and take the snapshot, both under the lock."""
        with self.lock:
            self.killed = True
            daemon.kill()
            known = [v for v in self.heads + [self.known_head] if v is not None]
            return Snapshot({label: Counter(fps) for label, fps in self.expected.items()},
                            {label: Counter(fps) for label, fps in self.fresh.items()}, list(self.in_flight.values()), max(known) if known else None, list(self.heads))

    def resume(self, found: Dict[str, Counter], current_head: Optional[int]) -> None:
        """Start the next trial from what the store holds (the calls in flight that committed included)."""
        with self.lock:
            self.expected = {label: Counter(fps) for label, fps in found.items()}
            self.known_head = current_head
            self.fresh = {}
            self.in_flight.clear()
            self.killed = False
            self.training_since = None


# ----------------------------------------------------------------- the clients


def adder(name: str, address: str, ledger: Ledger, rng: random.Random, photos: Dict[str, bytes]) -> None:
    """Add samples to this thread's labels until the kill; remove a class before it passes the cap."""
    labels = THREAD_LABELS[name]
    with Client(address, timeout=30) as client:
        while True:
            label = rng.choice(labels)
            use_photo = rng.random() < 0.08
            n = 1 if use_photo else rng.randint(1, 8)
            if ledger.count(label) + n > MAX_PER_CLASS:
                others = [l for l in labels if l != label and ledger.count(l) > 0]
                if not others:  # keep a class of our own, so the model never loses its head
                    continue
                if not ledger.begin(name, Call("remove", label)):
                    return
                try:
                    reply = client.remove_class(MODEL, label)
                except ClientError as exc:
                    ledger.refused(name, f"{name}: remove_class({label}) -> {exc.code.name}: {exc}")
                    if ledger.killed:
                        return
                    time.sleep(0.05)  # a live daemon refused: do not spin on it
                    continue
                ledger.ack(name, reply.head_version)
                continue
            if use_photo:
                data = photos[rng.choice(sorted(photos))]
                call = Call("add", label, (fingerprint_image(data),))
                kwargs = {"images": [data]}
            else:
                numbers = np.random.default_rng(rng.randrange(2 ** 63))
                center = numbers.uniform(0.0, 2.0)
                vectors = list(np.abs(numbers.normal(center, 1.0, (n, DIM))).astype(np.float32))
                call = Call("add", label, tuple(fingerprint_embedding(v) for v in vectors))
                kwargs = {"embeddings": vectors}
            if not ledger.begin(name, call):
                return
            try:
                reply = client.add_samples(MODEL, label, **kwargs)
            except ClientError as exc:
                ledger.refused(name, f"{name}: add_samples({label}, {len(call.fingerprints)}) -> "
                                     f"{exc.code.name}: {exc}")
                if ledger.killed:
                    return
                time.sleep(0.05)
                continue
            if reply.added != len(call.fingerprints):
                ledger.refused(name, f"{name}: add_samples({label}) stored {reply.added} of "
                                     f"{len(call.fingerprints)}")
                continue
            ledger.ack(name, reply.head_version)


def trainer(address: str, ledger: Ledger, rng: random.Random) -> None:
    """Train the head by backprop now and then, once the model has two classes."""
    with Client(address, timeout=30) as client:
        while True:
            time.sleep(rng.uniform(0.0, 0.2))
            if len(ledger.labels_with_samples()) < 2:
                if ledger.killed:
                    return
                continue
            if not ledger.begin("trainer", Call("train")):
                return
            try:
                run = client.train(MODEL, epochs=rng.randint(5, 40), seed=rng.randrange(2 ** 32))
                for _ in run:
                    pass
            except ClientError as exc:
                ledger.refused("trainer", f"trainer: train -> {exc.code.name}: {exc}")
                if ledger.killed:
                    return
                continue
            if run.model is None:
                ledger.refused("trainer", "trainer: train ended without a head")
                continue
            ledger.ack("trainer", run.model.head_version)


# ----------------------------------------------------------------- checking


@dataclass
class StoreState:
    """What a store holds for the model: each label's sample fingerprints and its head versions."""

    samples: Dict[str, Counter]
    heads: List[int]
    current: Optional[int]
    current_labels: Tuple[str, ...]


def read_store(path: Path) -> StoreState:
    """Open the store as the daemon would (raises StoreError when it is damaged) and fingerprint every sample.

    The Store API gives embeddings per label but not which rows carry an image, so
    the rows are read once more through a read-only connection (schema checked).
    """
    store = Store(path)
    try:
        counts = store.class_counts(MODEL)
        heads = [meta.version for meta in store.list_heads(MODEL)]
        record = store.current_head(MODEL)
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise RuntimeError(f"store schema {version}, this script reads {SCHEMA_VERSION}")
            samples: Dict[str, Counter] = {}
            for label, embedding, image in conn.execute(
                    "SELECT label, embedding, image FROM samples WHERE model = ?", (MODEL,)):
                fp = fingerprint_image(bytes(image)) if image is not None else \
                    fingerprint_embedding(np.frombuffer(embedding, np.float32))
                samples.setdefault(label, Counter())[fp] += 1
        conn.close()
    finally:
        store.close()
    if {label: sum(fps.values()) for label, fps in samples.items()} != counts:
        raise RuntimeError(f"the store's class_counts {counts} disagree with its rows")
    return StoreState(samples, heads, record[0] if record else None, tuple(record[2].labels) if record else ())


@dataclass
class Verdict:
    """One trial's check of the store against the ledger."""

    checked: int = 0  # acknowledged samples found, those of earlier trials again included
    found: int = 0  # samples acknowledged in this trial and found
    lost: int = 0  # acknowledged samples missing
    committed_in_flight: int = 0  # calls in flight at the kill that turned out committed
    head: str = ""  # "old", "new" or "none"
    failures: List[str] = field(default_factory=list)


def check(snapshot: Snapshot, state: StoreState) -> Verdict:
    """Compare what the store holds with what was acknowledged and what was in flight.

    Per label the store may hold exactly the acknowledged samples, or those plus the
    whole of an add in flight, or nothing when a removal was in flight. Anything else
    is a failure; a missing acknowledged sample is also counted as lost.
    """
    verdict = Verdict()
    adds = {c.label: Counter(c.fingerprints) for c in snapshot.in_flight if c.kind == "add"}
    removes = {c.label for c in snapshot.in_flight if c.kind == "remove"}
    for label in sorted(set(snapshot.expected) | set(state.samples)):
        want = snapshot.expected.get(label, Counter())
        have = state.samples.get(label, Counter())
        pending = adds.get(label, Counter())
        fresh = snapshot.fresh.get(label, Counter())
        if label in removes and not have:
            verdict.committed_in_flight += 1
            verdict.checked += sum(want.values())  # removed by the committed call, as asked
            verdict.found += sum(fresh.values())
            continue
        missing = want - have
        verdict.lost += sum(missing.values())
        verdict.checked += sum(want.values()) - sum(missing.values())
        verdict.found += sum((fresh & have).values())
        if missing:
            verdict.failures.append(f"label {label}: {sum(missing.values())} acknowledged samples missing")
        extra = have - want
        if extra and extra == pending:
            verdict.committed_in_flight += 1
        elif extra:
            verdict.failures.append(f"label {label}: {sum(extra.values())} samples nobody acknowledged "
                                    f"(in flight: {sum(pending.values())}); a call stored in part?")
    for version in snapshot.heads:
        if version not in state.heads:
            verdict.failures.append(f"acknowledged head version {version} is not in the store")
    if state.current is None:
        verdict.head = "none"
        if snapshot.max_head is not None:
            verdict.failures.append(f"no current head; version {snapshot.max_head} was acknowledged")
    elif snapshot.max_head is None or state.current > snapshot.max_head:
        verdict.head = "new"
        newer = [v for v in state.heads if snapshot.max_head is None or v > snapshot.max_head]
        if len(newer) > len(snapshot.in_flight):
            verdict.failures.append(f"{len(newer)} head versions newer than the last acknowledged "
                                    f"{snapshot.max_head}, but only {len(snapshot.in_flight)} calls were in flight")
    elif state.current == snapshot.max_head:
        verdict.head = "old"
    else:
        verdict.head = "older"
        verdict.failures.append(f"current head {state.current} is older than acknowledged {snapshot.max_head}")
    if state.current is not None and state.current not in state.heads:
        verdict.failures.append(f"current head {state.current} is not a stored version")
    return verdict


def check_serving(daemon: Daemon, state: StoreState, photo: bytes) -> List[str]:
    """After the restart: the daemon shows the store's classes and head, and classifies into a stored label."""
    failures: List[str] = []
    with Client(daemon.address, timeout=30) as client:
        learned = client.classes(MODEL)
        served = {c.label: c.samples for c in learned.classes}
        stored = {label: sum(fps.values()) for label, fps in state.samples.items()}
        if state.current is not None:
            if learned.head_version != state.current:
                failures.append(f"daemon serves head {learned.head_version}, the store's current is {state.current}")
            current = [h.head_version for h in client.heads(MODEL) if h.current]
            if current != [state.current]:
                failures.append(f"daemon lists current heads {current}, the store's is {state.current}")
            for label in state.current_labels:
                if served.get(label) != stored.get(label, 0):
                    failures.append(f"class {label}: daemon says {served.get(label)} samples, "
                                    f"the store holds {stored.get(label, 0)}")
            top = client.classify(MODEL, photo, top_k=1).classes
            if not top or top[0].label not in stored:
                failures.append(f"classify answered {[c.label for c in top]}, not a stored label "
                                f"{sorted(stored)}")
        embedded = client.embed(MODEL, photo)
        if np.asarray(embedded.embedding).size != DIM:
            failures.append(f"embed gave {np.asarray(embedded.embedding).size} values, not {DIM}")
    return failures


# ----------------------------------------------------------------- a run


def kill_moment(mode: str, ledger: Ledger, rng: random.Random) -> str:
    """Wait for this trial's moment; returns what was actually happening then."""
    if mode == "adds":
        time.sleep(rng.uniform(0.05, 1.0))
        return mode
    if mode == "training":
        end = time.monotonic() + 10
        typical = sorted(ledger.training_seconds)[len(ledger.training_seconds) // 2] \
            if ledger.training_seconds else 0.2
        while time.monotonic() < end:
            with ledger.lock:
                since = ledger.training_since
            if since is not None:
                time.sleep(max(0.0, since + rng.uniform(0.0, 1.2 * typical) - time.monotonic()))
                return mode
            time.sleep(0.002)
        return "adds"  # no training started within 10 s (fewer than two classes)
    with ledger.lock:
        seen = ledger.ack_count
        ledger.acked.wait_for(lambda: ledger.ack_count > seen, timeout=10)
    time.sleep(rng.uniform(0.0, 0.003))
    return mode


def run(trials: int, seed: int, test_data: Path, workdir: Path, verbose: bool) -> dict:
    """All trials on one daemon and one store; returns the JSON document."""
    started = time.monotonic()
    rng = random.Random(seed)
    photos = {name: (test_data / name).read_bytes() for name in PHOTOS}
    daemon = Daemon(workdir, test_data)
    ledger = Ledger()
    totals = {"kills": 0, "samples_found": 0, "samples_checked": 0, "unserved": 0, "lost": 0,
              "committed_in_flight": 0, "heads_old": 0, "heads_new": 0, "heads_none": 0}
    modes: Counter = Counter()
    failures: List[str] = []
    restart_s: List[float] = []
    daemon.start()
    try:
        for trial in range(trials):
            mode = rng.choice(KILL_MODES)
            threads = [threading.Thread(target=adder, args=(name, daemon.address, ledger,
                                                            random.Random(f"{seed}-{trial}-{name}"), photos),
                                        name=name, daemon=True) for name in THREAD_LABELS]
            threads.append(threading.Thread(target=trainer, args=(daemon.address, ledger,
                                                                  random.Random(f"{seed}-{trial}-trainer")),
                                            name="trainer", daemon=True))
            for t in threads:
                t.start()
            happened = kill_moment(mode, ledger, rng)
            snapshot = ledger.kill(daemon)
            totals["kills"] += 1
            modes[happened] += 1
            for t in threads:
                t.join(60)
                if t.is_alive():
                    failures.append(f"trial {trial}: client thread {t.name} did not stop after the kill")
            trial_failures = [f"trial {trial}: {f}" for f in ledger.failures]
            ledger.failures.clear()
            try:
                state = read_store(store_path(daemon.state_dir))
            except Exception as exc:  # noqa: BLE001 - a store that does not open is the finding itself
                failures.append(f"trial {trial}: the store does not open: {type(exc).__name__}: {exc}")
                break
            verdict = check(snapshot, state)
            trial_failures += [f"trial {trial}: {f}" for f in verdict.failures]
            totals["samples_found"] += verdict.found
            totals["samples_checked"] += verdict.checked
            unserved = sorted(set(state.samples) - set(state.current_labels))
            if unserved:  # not a crash failure: see the report's "classes_not_served"
                totals["unserved"] += 1
                if verbose:
                    print(f"trial {trial}: classes with samples the current head lacks: {unserved}",
                          file=sys.stderr)
            totals["lost"] += verdict.lost
            totals["committed_in_flight"] += verdict.committed_in_flight
            totals[f"heads_{verdict.head}"] = totals.get(f"heads_{verdict.head}", 0) + 1
            try:
                restart_s.append(daemon.start())
                trial_failures += [f"trial {trial}: {f}" for f in
                                   check_serving(daemon, state, photos[rng.choice(PHOTOS)])]
            except Exception as exc:  # noqa: BLE001 - the daemon not coming back is the finding itself
                failures.append(f"trial {trial}: after the restart: {type(exc).__name__}: {exc}")
                break
            failures += trial_failures
            ledger.resume(state.samples, state.current)
            if verbose:
                print(f"trial {trial}: kill {happened}, in flight {len(snapshot.in_flight)}, "
                      f"found {verdict.found}, lost {verdict.lost}, head {verdict.head} {state.current}, "
                      f"classes {len(state.samples)}, failures {len(trial_failures)}", file=sys.stderr)
    finally:
        exit_code = daemon.stop()
    if exit_code != 0:
        failures.append(f"the daemon's clean stop at the end exited {exit_code}")
    restart_sorted = sorted(restart_s) or [0.0]
    return {
        "trials": trials,
        "seed": seed,
        "kills": totals["kills"],
        "kill_moments": dict(sorted(modes.items())),
        "acknowledged_calls": ledger.acknowledged_calls,
        "acknowledged_samples": ledger.acknowledged_samples,
        "acknowledged_heads": len(ledger.heads),
        "removed_classes": ledger.removals,
        "acknowledged_samples_removed": ledger.removed_samples,
        "trainings": ledger.trainings,
        "samples_found": totals["samples_found"],
        "samples_checked": totals["samples_checked"],
        "lost": totals["lost"],
        "in_flight_committed": totals["committed_in_flight"],
        "heads_seen": {"old": totals["heads_old"], "new": totals["heads_new"], "none": totals["heads_none"]},
        "classes_not_served": totals["unserved"],
        "restart_s": {"median": round(restart_sorted[len(restart_sorted) // 2], 2),
                      "max": round(restart_sorted[-1], 2)},
        "failures": failures,
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50, help="kills and restarts (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the samples, the calls and the kill moments")
    parser.add_argument("--json", action="store_true", help="print only the JSON document")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (store, log) and say where")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    test_data = Path(os.environ.get("EDGETPUD_TEST_DATA") or DEFAULT_TEST_DATA)
    if not (test_data / f"{BASE_FILE}.tflite").is_file():
        parser.error(f"no Coral test data at {test_data}: set EDGETPUD_TEST_DATA")
    workdir = Path(tempfile.mkdtemp(prefix="edgetpud-crash-"))
    try:
        report = run(args.trials, args.seed, test_data, workdir, verbose=not args.json)
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0 if report["lost"] == 0 and not report["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())

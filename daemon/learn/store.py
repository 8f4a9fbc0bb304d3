"""The learning store: every acknowledged sample and every head version, in one SQLite file.

It lives under the daemon's ``--state-dir`` (``STATE/learning.sqlite3``) and must
survive SIGKILL and power loss at any instant, so:

- SQLite from the standard library in WAL mode with ``synchronous=FULL``: a commit
  has returned only once the WAL is fsynced, and a crash leaves the last commit.
- One ``BEGIN IMMEDIATE`` transaction per call that changes anything: a call's
  samples all land or none do, and the per-class and per-model limits are checked
  under the write lock, so two clients (threads, connections or processes) adding
  to one class at once are both counted and can never pass the cap together.
- A new file is built under a temporary name and linked into place when complete,
  then the folder is fsynced: the store's name never points at a half-made file.
- Opening checks before it writes: a file that is not a store, is damaged
  (``PRAGMA quick_check``) or comes from a newer schema raises ``StoreError`` and
  is left byte for byte as it was. edgetpud never deletes or repairs a store.
  quick_check reads the whole file: 26-75 ms for 10,000 samples of 1024 floats
  (47 MB, warm cache, scripts/bench/bench_store.py); a cold SD card reads slower.

Threads: the daemon calls the store from a thread pool, so each thread gets its
own connection (``threading.local``); WAL lets readers run beside the one writer,
and SQLite's busy timeout queues writers. ``close()`` closes every connection and
must be called once no other thread uses the store.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote

import numpy as np

from edgetpud.daemon.errors import (
    InvalidArgumentError,
    NotFoundError,
    PreconditionError,
    ResourceExhaustedError,
)

from .head import LinearHead
from .imprinting import MAX_SAMPLES_PER_CLASS

log = logging.getLogger(__name__)

#: The store's file name under ``--state-dir``.
STORE_FILE = "learning.sqlite3"
#: ``PRAGMA user_version`` of the schema this code writes; a larger one is refused.
SCHEMA_VERSION = 1
#: ``PRAGMA application_id``: "ETPU", so a foreign SQLite file is told apart from a store.
APPLICATION_ID = 0x45545055
#: Embedding and image bytes one model may hold unless the daemon says otherwise.
DEFAULT_MAX_BYTES_PER_MODEL = 256 * 1024 * 1024
#: How long a writer waits for another writer's transaction before giving up.
BUSY_TIMEOUT_S = 30.0

_HASH = re.compile(r"[0-9a-f]{64}")
_HASH_CHUNK = 1 << 20

_SCHEMA = """
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL DEFAULT 0,
    current_version INTEGER,
    FOREIGN KEY (name, current_version) REFERENCES heads (model, version)
        DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL REFERENCES models (name),
    label TEXT NOT NULL CHECK (length(label) > 0),
    dim INTEGER NOT NULL CHECK (dim > 0),
    embedding BLOB NOT NULL CHECK (length(embedding) = 4 * dim),
    base_hash TEXT NOT NULL,
    image BLOB,
    nbytes INTEGER NOT NULL CHECK (nbytes = length(embedding) + coalesce(length(image), 0)),
    created REAL NOT NULL
);
CREATE INDEX samples_by_class ON samples (model, label, nbytes);
CREATE INDEX samples_by_base ON samples (model, base_hash);
CREATE TABLE heads (
    model TEXT NOT NULL REFERENCES models (name),
    version INTEGER NOT NULL CHECK (version > 0),
    method TEXT NOT NULL,
    head BLOB NOT NULL,
    base_hash TEXT NOT NULL,
    labels TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (model, version)
);
"""


class StoreError(PreconditionError):
    """The store file cannot be used as it is: not a store, damaged, or from a newer edgetpud.

    The file is left exactly as it was; the message names it and what to do.
    """


@dataclass(frozen=True)
class HeadMeta:
    """One stored head version, without its weights (what ``heads list`` shows)."""

    model: str
    version: int
    method: str
    base_hash: str
    created: float
    labels: Tuple[str, ...]
    current: bool


@dataclass(frozen=True)
class StaleSample:
    """A sample embedded by another base model whose image can be embedded again."""

    id: int
    label: str
    image: bytes


def content_hash(path_or_bytes: Union[str, os.PathLike, bytes, bytearray, memoryview]) -> str:
    """The sha256 hex of a base model's file or bytes: its identity for the samples embedded by it.

    Raises:
        NotFoundError: the path cannot be read.
    """
    digest = hashlib.sha256()
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        digest.update(path_or_bytes)
        return digest.hexdigest()
    try:
        with open(path_or_bytes, "rb") as f:
            for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise NotFoundError(f"cannot read {os.fspath(path_or_bytes)} to hash it: {exc.strerror}") from None
    return digest.hexdigest()


def store_path(state_dir: Union[str, os.PathLike]) -> Path:
    """Where the store lives under a ``--state-dir``."""
    return Path(state_dir) / STORE_FILE


class Store:
    """Samples and head versions per model name, durable at every acknowledged call.

    Raises (constructor):
        StoreError: the file is not a store, is damaged, or was written by a newer edgetpud.
    """

    def __init__(self, path: Union[str, os.PathLike], *,
                 max_bytes_per_model: int = DEFAULT_MAX_BYTES_PER_MODEL,
                 max_samples_per_class: int = MAX_SAMPLES_PER_CLASS) -> None:
        if max_bytes_per_model <= 0 or max_samples_per_class <= 0:
            raise InvalidArgumentError("the store's limits must be positive: "
                                       f"max_bytes_per_model={max_bytes_per_model}, "
                                       f"max_samples_per_class={max_samples_per_class}")
        self.path = Path(path)
        self.max_bytes_per_model = int(max_bytes_per_model)
        self.max_samples_per_class = int(max_samples_per_class)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: List[sqlite3.Connection] = []
        self._closed = False
        if self.path.exists() and self.path.stat().st_size > 0:
            self._inspect()
        else:
            self._create()
        self._conn()  # fail now, not on the first call, when the file cannot be opened for writing

    # ------------------------------------------------------------ opening

    def _refuse(self, problem: str) -> StoreError:
        return StoreError(f"the learning store {self.path} {problem}. edgetpud never deletes or changes it: "
                          f"move it aside (mv {self.path} {self.path}.bad) and restart to begin with an "
                          "empty store, or restore it from a backup")

    def _inspect(self) -> None:
        """Check an existing file through a read-only connection, so a refused file is never written."""
        if not self.path.is_file():
            raise self._refuse("is not a regular file")
        try:
            conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True,
                                   isolation_level=None, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise self._refuse(f"cannot be opened ({exc})") from None
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if app_id != APPLICATION_ID:
                raise self._refuse(f"is an SQLite database of another program (application_id {app_id:#x}), "
                                   "not an edgetpud learning store")
            if version > SCHEMA_VERSION:
                raise StoreError(f"the learning store {self.path} was written by a newer edgetpud (schema "
                                 f"{version}; this edgetpud reads up to {SCHEMA_VERSION}). Run the newer "
                                 f"edgetpud, or move the file aside (mv {self.path} {self.path}.new) to begin "
                                 "with an empty store; edgetpud never deletes or changes it")
            if version < 1:
                raise self._refuse(f"has no schema version ({version})")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise self._refuse("is damaged (SQLite quick_check: " + "; ".join(problems) + ")")
        except sqlite3.Error as exc:
            raise self._refuse(f"is not a readable SQLite database ({exc})") from None
        finally:
            conn.close()

    def _create(self) -> None:
        """Build an empty store under a temporary name, then link it into place (never over a file)."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot make the folder {folder} of the learning store: {exc.strerror}; "
                             "check --state-dir and its permissions") from None
        tmp = folder / f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.new"
        try:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
            conn = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA application_id={APPLICATION_ID}; "
                                   f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            finally:
                conn.close()  # the last connection checkpoints the WAL into the file and removes it
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)  # atomic, and fails rather than replace a store made meanwhile
            except FileExistsError:
                if self.path.stat().st_size > 0:
                    tmp.unlink()
                    self._inspect()
                    return
                os.replace(tmp, self.path)  # an empty file (touched by someone) holds nothing to keep
            except OSError:
                if self.path.exists():  # a file system without hard links: replace only where nothing is
                    raise
                os.replace(tmp, self.path)
            tmp.unlink(missing_ok=True)
            _fsync_dir(folder)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot create the learning store {self.path}: {exc}; check --state-dir, "
                             "its permissions and free space") from None
        log.info("created the learning store %s", self.path)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        with self._lock:
            if self._closed:
                raise PreconditionError(f"the learning store {self.path} is closed")
            try:
                conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=rw", uri=True,
                                       isolation_level=None, timeout=BUSY_TIMEOUT_S,
                                       check_same_thread=False)  # only so close() can close it
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if mode != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the learning store {self.path} for writing: {exc}; check "
                                 "the permissions of the file and its folder") from None
            self._conns.append(conn)
            self._local.conn = conn
            return conn

    def close(self) -> None:
        """Close every thread's connection; call once no thread uses the store any more."""
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transactions

    def _error(self, exc: sqlite3.Error) -> Exception:
        """One place that turns SQLite's errors into the service's."""
        name = getattr(exc, "sqlite_errorname", "")
        text = str(exc)
        if name == "SQLITE_FULL" or "disk is full" in text:
            return ResourceExhaustedError(f"the disk of the learning store {self.path} is full: free space "
                                          "there, or remove classes that are no longer needed")
        if name.startswith("SQLITE_BUSY") or "database is locked" in text:
            return ResourceExhaustedError(f"the learning store {self.path} stayed busy for {BUSY_TIMEOUT_S:.0f} s "
                                          "(another process holds it?); retry")
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text:
            return self._refuse(f"is damaged ({text})")
        return StoreError(f"the learning store {self.path} failed: {text}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed (and fsynced) when the block ends, else rolled back."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from None
            raise

    def _read(self, sql: str, args: Sequence[object] = ()) -> List[tuple]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    # ------------------------------------------------------------ samples

    def add_samples(self, model: str, label: str, embeddings: np.ndarray,
                    images: Sequence[Optional[bytes]], base_hash: str) -> List[int]:
        """Store one call's samples in one transaction and return their new ids.

        Raises:
            InvalidArgumentError: shapes that do not match, or an embedding size other than the
                one this model's samples of the same base have.
            ResourceExhaustedError: the class would pass ``max_samples_per_class`` or the model
                ``max_bytes_per_model``; nothing is stored.
        """
        with self._write() as conn:
            return self._insert_samples(conn, model, [(label, embeddings, images)], base_hash)

    def add_samples_and_head(self, model: str, batches: Sequence[Tuple[str, np.ndarray, Sequence[Optional[bytes]]]],
                             base_hash: str, head: LinearHead, method: str) -> int:
        """One acknowledged learning call: its samples (several labels) and the head they make, in one transaction.

        Returns the new head version (made current). Raises: as ``add_samples``; nothing is stored on error.
        """
        blob = self._head_blob(model, head, method, base_hash)
        with self._write() as conn:
            self._insert_samples(conn, model, batches, base_hash)
            return self._insert_head(conn, model, head, blob, method, base_hash, True)

    def remove_class_and_set_head(self, model: str, label: str, head: Optional[LinearHead], method: str,
                                  base_hash: str) -> Optional[int]:
        """Delete a class's samples and serve ``head`` (None: no head any more) in one transaction.

        Returns the new head version, or None when the model is left without a head.
        """
        blob = self._head_blob(model, head, method, base_hash) if head is not None else None
        with self._write() as conn:
            conn.execute("DELETE FROM samples WHERE model = ? AND label = ?", (model, label))
            if head is None:
                conn.execute("UPDATE models SET current_version = NULL WHERE name = ?", (model,))
                return None
            return self._insert_head(conn, model, head, blob, method, base_hash, True)

    def _insert_samples(self, conn: sqlite3.Connection, model: str,
                        batches: Sequence[Tuple[str, np.ndarray, Sequence[Optional[bytes]]]],
                        base_hash: str) -> List[int]:
        """Check the limits and insert, inside the caller's write transaction."""
        _check_text("model name", model)
        _check_hash(base_hash)
        now = time.time()
        prepared = []
        for label, embeddings, images in batches:
            _check_text("label", label)
            x = _as_embeddings(embeddings)
            n, dim = x.shape
            if len(images) != n:
                raise InvalidArgumentError(f"{n} embeddings came with {len(images)} images; give one image "
                                           "(or None) per embedding")
            blobs = [_as_image(image, i) for i, image in enumerate(images)]
            rows = [(model, label, dim, x[i].tobytes(), base_hash, blobs[i],
                     4 * dim + (len(blobs[i]) if blobs[i] is not None else 0), now) for i in range(n)]
            prepared.append((label, n, dim, rows))
        adding = sum(row[6] for _, _, _, rows in prepared for row in rows)
        for label, n, _, _ in prepared:
            count = conn.execute("SELECT COUNT(*) FROM samples WHERE model = ? AND label = ?",
                                 (model, label)).fetchone()[0]
            if count + n > self.max_samples_per_class:
                raise ResourceExhaustedError(
                    f"class {label!r} of model {model!r} has {count} samples and this call adds {n}: a class "
                    f"holds at most {self.max_samples_per_class}. Add fewer, or remove the class "
                    f"(edgetpuctl classes remove --model {model} --label {label}) and add it again")
        used, held = conn.execute("SELECT COALESCE(SUM(nbytes), 0), COUNT(*) FROM samples WHERE model = ?",
                                  (model,)).fetchone()
        if used + adding > self.max_bytes_per_model:
            n_all = sum(n for _, n, _, _ in prepared)
            raise ResourceExhaustedError(
                f"model {model!r} may keep {self.max_bytes_per_model} bytes of samples "
                f"(learn_max_bytes_per_model) and holds {used} in {held} samples; this call's {n_all} "
                f"would add {adding}. Remove classes it no longer needs (edgetpuctl classes remove), "
                "or raise learn_max_bytes_per_model in edgetpud.toml")
        known = conn.execute("SELECT dim FROM samples WHERE model = ? AND base_hash = ? LIMIT 1",
                             (model, base_hash)).fetchone()
        for _, _, dim, _ in prepared:
            if known is not None and known[0] != dim:
                raise InvalidArgumentError(f"model {model!r} has embeddings of {known[0]} values from this "
                                           f"base model; these have {dim}")
        conn.execute("INSERT OR IGNORE INTO models (name) VALUES (?)", (model,))
        ids = []
        for _, _, _, rows in prepared:
            for row in rows:
                cur = conn.execute("INSERT INTO samples (model, label, dim, embedding, base_hash, image, "
                                   "nbytes, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
                ids.append(int(cur.lastrowid))
        return ids

    def class_counts(self, model: str) -> Dict[str, int]:
        """Samples per label, in the order the classes were first added."""
        rows = self._read("SELECT label, COUNT(*) FROM samples WHERE model = ? GROUP BY label ORDER BY MIN(id)",
                          (model,))
        return {label: int(count) for label, count in rows}

    def used_bytes(self, model: str) -> int:
        """Embedding and image bytes the model's samples hold (what ``max_bytes_per_model`` limits)."""
        return int(self._read("SELECT COALESCE(SUM(nbytes), 0) FROM samples WHERE model = ?", (model,))[0][0])

    def embeddings(self, model: str, base_hash: Optional[str] = None) -> Dict[str, np.ndarray]:
        """Each label's embeddings as float32 ``[N, D]`` (oldest first), optionally only one base's.

        Raises:
            PreconditionError: without ``base_hash``, the samples have embeddings of different sizes
                (they come from different base models and need re-embedding first).
        """
        sql = "SELECT id, label, dim, embedding FROM samples WHERE model = ?"
        args: Tuple[str, ...] = (model,)
        if base_hash is not None:
            sql, args = sql + " AND base_hash = ?", (model, base_hash)
        grouped: Dict[str, List[bytes]] = {}
        dims = set()
        rows = self._read(sql, args)
        rows.sort(key=lambda row: row[0])  # here, not ORDER BY: SQLite would sort the blobs in a temp b-tree
        for _, label, dim, blob in rows:
            grouped.setdefault(label, []).append(blob)
            dims.add(dim)
        if len(dims) > 1:
            raise PreconditionError(f"model {model!r} has samples of embedding sizes {sorted(dims)} from "
                                    "different base models; re-embed them, or ask for one base model's")
        dim = dims.pop() if dims else 0
        return {label: np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(-1, dim).copy()
                for label, blobs in grouped.items()}

    def stale_samples(self, model: str, base_hash: str, limit: Optional[int] = None) -> List[StaleSample]:
        """Samples embedded by another base than ``base_hash`` that kept their image (oldest first)."""
        sql = ("SELECT id, label, image FROM samples WHERE model = ? AND base_hash != ? AND image IS NOT NULL "
               "ORDER BY id")
        args: Tuple[object, ...] = (model, base_hash)
        if limit is not None:
            sql, args = sql + " LIMIT ?", (model, base_hash, int(limit))
        return [StaleSample(int(i), label, bytes(image)) for i, label, image in self._read(sql, args)]

    def update_embeddings(self, model: str, ids: Sequence[int], embeddings: np.ndarray, base_hash: str) -> int:
        """Replace re-embedded samples' embeddings in one transaction; returns how many were updated.

        Ids no longer there (their class was removed meanwhile) are skipped. The size limit is
        not applied: refusing would leave the samples stale for ever.
        """
        _check_hash(base_hash)
        x = _as_embeddings(embeddings)
        if len(ids) != x.shape[0]:
            raise InvalidArgumentError(f"{len(ids)} sample ids came with {x.shape[0]} embeddings")
        dim = x.shape[1]
        updated = 0
        with self._write() as conn:
            for i, sample_id in enumerate(ids):
                cur = conn.execute(
                    "UPDATE samples SET dim = ?, embedding = ?, base_hash = ?, "
                    "nbytes = ? + coalesce(length(image), 0) WHERE id = ? AND model = ?",
                    (dim, x[i].tobytes(), base_hash, 4 * dim, int(sample_id), model))
                updated += cur.rowcount
        return updated

    def remove_class(self, model: str, label: str) -> int:
        """Delete a class's samples; returns how many (0: no such class, the caller says NOT_FOUND)."""
        with self._write() as conn:
            return int(conn.execute("DELETE FROM samples WHERE model = ? AND label = ?", (model, label)).rowcount)

    def remove_model(self, model: str) -> Tuple[int, int]:
        """Delete a model's samples and heads; returns (samples, heads) removed.

        Head version numbers are kept counting, so a version is never reused.
        """
        with self._write() as conn:
            conn.execute("UPDATE models SET current_version = NULL WHERE name = ?", (model,))
            heads = conn.execute("DELETE FROM heads WHERE model = ?", (model,)).rowcount
            samples = conn.execute("DELETE FROM samples WHERE model = ?", (model,)).rowcount
        return int(samples), int(heads)

    def models(self) -> List[str]:
        """Names of models that have samples or heads."""
        rows = self._read("SELECT DISTINCT model FROM samples UNION SELECT DISTINCT model FROM heads ORDER BY 1")
        return [row[0] for row in rows]

    # ------------------------------------------------------------ heads

    def add_head(self, model: str, head: LinearHead, method: str, base_hash: str,
                 make_current: bool = True) -> int:
        """Store a new head version (and make it current) in one transaction; returns its version."""
        blob = self._head_blob(model, head, method, base_hash)
        with self._write() as conn:
            return self._insert_head(conn, model, head, blob, method, base_hash, make_current)

    @staticmethod
    def _head_blob(model: str, head: LinearHead, method: str, base_hash: str) -> bytes:
        _check_text("model name", model)
        _check_text("method", method)
        _check_hash(base_hash)
        return head.to_bytes()

    @staticmethod
    def _insert_head(conn: sqlite3.Connection, model: str, head: LinearHead, blob: Optional[bytes], method: str,
                     base_hash: str, make_current: bool) -> int:
        conn.execute("INSERT OR IGNORE INTO models (name) VALUES (?)", (model,))
        conn.execute("UPDATE models SET last_version = last_version + 1 WHERE name = ?", (model,))
        version = int(conn.execute("SELECT last_version FROM models WHERE name = ?", (model,)).fetchone()[0])
        conn.execute("INSERT INTO heads (model, version, method, head, base_hash, labels, created) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (model, version, method, blob, base_hash, json.dumps(list(head.labels)), time.time()))
        if make_current:
            conn.execute("UPDATE models SET current_version = ? WHERE name = ?", (version, model))
        return version

    def current_head(self, model: str) -> Optional[Tuple[int, LinearHead, HeadMeta]]:
        """The head the model serves, or None when it has none."""
        rows = self._read(_HEAD_SELECT + " WHERE h.model = ? AND h.version = m.current_version", (model,))
        if not rows:
            return None
        meta = _meta(rows[0])
        return meta.version, self._decode(meta, rows[0][-1]), meta

    def head(self, model: str, version: int) -> Tuple[LinearHead, HeadMeta]:
        """One head version.

        Raises:
            NotFoundError: the model has no such version.
        """
        rows = self._read(_HEAD_SELECT + " WHERE h.model = ? AND h.version = ?", (model, int(version)))
        if not rows:
            raise self._no_head(model, version)
        meta = _meta(rows[0])
        return self._decode(meta, rows[0][-1]), meta

    def list_heads(self, model: str) -> List[HeadMeta]:
        """Every head version of a model, oldest first."""
        return [_meta(row) for row in self._read(_HEAD_SELECT.replace(", h.head", "") +
                                                 " WHERE h.model = ? ORDER BY h.version", (model,))]

    def set_current(self, model: str, version: int) -> None:
        """Serve an earlier (or later) head version again.

        Raises:
            NotFoundError: the model has no such version.
        """
        with self._write() as conn:
            found = conn.execute("SELECT 1 FROM heads WHERE model = ? AND version = ?",
                                 (model, int(version))).fetchone()
            if found is None:
                raise self._no_head(model, version)
            conn.execute("UPDATE models SET current_version = ? WHERE name = ?", (int(version), model))

    def _no_head(self, model: str, version: int) -> NotFoundError:
        versions = [meta.version for meta in self.list_heads(model)]
        known = f"its versions are {', '.join(map(str, versions))}" if versions else "it has no heads"
        return NotFoundError(f"model {model!r} has no head version {version}; {known}")

    def _decode(self, meta: HeadMeta, blob: bytes) -> LinearHead:
        try:
            return LinearHead.from_bytes(bytes(blob))
        except ValueError as exc:
            raise self._refuse(f"holds a damaged head (model {meta.model!r} version {meta.version}: {exc})") from None


_HEAD_SELECT = ("SELECT h.model, h.version, h.method, h.base_hash, h.created, h.labels, "
                "h.version = m.current_version, h.head FROM heads h JOIN models m ON m.name = h.model")


def _meta(row: tuple) -> HeadMeta:
    return HeadMeta(model=row[0], version=int(row[1]), method=row[2], base_hash=row[3], created=float(row[4]),
                    labels=tuple(json.loads(row[5])), current=bool(row[6]))


def _check_text(what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"a {what} must be a non-empty string, got {value!r}")


def _check_hash(value: object) -> None:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise InvalidArgumentError(f"a base model's identity is the sha256 hex of its file (64 lowercase hex "
                                   f"digits, see content_hash), got {value!r}")


def _as_embeddings(embeddings: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidArgumentError(f"embeddings must be an array [N, D] with N, D > 0, got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        raise InvalidArgumentError("an embedding holds NaN or infinite values; it is not stored")
    return x


def _as_image(image: object, index: int) -> Optional[bytes]:
    if image is None:
        return None
    if not isinstance(image, (bytes, bytearray, memoryview)) or len(image) == 0:
        raise InvalidArgumentError(f"image {index} must be non-empty bytes or None")
    return bytes(image)


def _fsync_dir(folder: Path) -> None:
    """Make a new name in ``folder`` survive power loss (a file's fsync does not cover its name)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

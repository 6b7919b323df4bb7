"""The class prompts' and the captions' embeddings are kept in flywheel's cache folder (models/text.py): a process
that needs only them reads them without importing sentence-transformers, and gets exactly what encoding gave."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from models.text import PROMPTS_CACHE, TEXTS_CACHE, embed_texts, encode_class_prompts, encode_texts
from tests.conftest import PROJECT

PROMPTS = [["a photo of the digit zero", "zero"], ["a photo of the digit one", "one"]]
READ_IN_A_NEW_PROCESS = """
import json, sys
import numpy as np
from models.text import encode_class_prompts
embeddings = encode_class_prompts(json.loads(sys.argv[1]))
np.save(sys.argv[2], embeddings)
print(json.dumps({"sentence_transformers": "sentence_transformers" in sys.modules}))
"""


def read_in_a_new_process(prompts, tmp_path, env) -> tuple[np.ndarray, bool]:
    out = tmp_path / "read.npy"
    done = subprocess.run([sys.executable, "-c", READ_IN_A_NEW_PROCESS, json.dumps(prompts), str(out)],
                          env=env, capture_output=True, text=True, check=True)
    return np.load(out), json.loads(done.stdout.strip().splitlines()[-1])["sentence_transformers"]


def test_a_later_process_reads_the_prompts_embeddings_without_loading_the_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_CACHE_DIR", str(tmp_path / "cache"))
    encoded = encode_class_prompts(PROMPTS)
    kept = list((tmp_path / "cache" / PROMPTS_CACHE).glob("*.npy"))
    assert len(kept) == 1 and encoded.shape == (2, 384) and encoded.dtype == np.float32
    env = {**os.environ, "FLYWHEEL_CACHE_DIR": str(tmp_path / "cache")}
    read, imported = read_in_a_new_process(PROMPTS, tmp_path, env)
    assert not imported  # no sentence-transformers (5 CPU-s of imports) in that process
    assert np.array_equal(read, encoded)

    other = encode_class_prompts([PROMPTS[1], PROMPTS[0]])  # other prompts (here: the classes' order): computed
    assert np.allclose(other, encoded[::-1], atol=1e-6) and len(list(kept[0].parent.glob("*.npy"))) == 2


def test_a_cut_short_or_foreign_cache_file_is_encoded_again_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_CACHE_DIR", str(tmp_path / "cache"))
    encoded = encode_class_prompts(PROMPTS)
    (path,) = (tmp_path / "cache" / PROMPTS_CACHE).glob("*.npy")
    path.write_bytes(path.read_bytes()[:200])  # a write cut short (the rename makes it unlikely; a copy might not)
    assert np.array_equal(encode_class_prompts(PROMPTS), encoded)
    np.save(path, np.zeros((3, 384), np.float32))  # another shape under that name
    assert np.array_equal(encode_class_prompts(PROMPTS), encoded)
    assert np.array_equal(np.load(path), encoded)  # replaced by the right embeddings


READ_TEXTS_IN_A_NEW_PROCESS = """
import json, sys
import numpy as np
from models.text import embed_texts
np.save(sys.argv[2], embed_texts(json.loads(sys.argv[1])))
print(json.dumps({"sentence_transformers": "sentence_transformers" in sys.modules}))
"""
CAPTIONS = ["a handwritten seven", "the digit two, spoken", "a handwritten seven", "drei"]


def test_a_later_process_reads_caption_embeddings_without_loading_the_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_CACHE_DIR", str(tmp_path / "cache"))
    embedded = embed_texts(CAPTIONS)
    assert embedded.shape == (4, 384) and embedded.dtype == np.float32
    assert np.allclose(embedded, encode_texts(CAPTIONS), atol=1e-6)  # what the encoder gives, row for row
    assert np.array_equal(embedded[0], embedded[2])  # a repeated caption: one embedding
    assert len(list((tmp_path / "cache" / TEXTS_CACHE).glob("*.sqlite"))) == 1
    out = tmp_path / "read.npy"
    done = subprocess.run([sys.executable, "-c", READ_TEXTS_IN_A_NEW_PROCESS, json.dumps(CAPTIONS[::-1]), str(out)],
                          env={**os.environ, "FLYWHEEL_CACHE_DIR": str(tmp_path / "cache")},
                          capture_output=True, text=True, check=True)
    assert not json.loads(done.stdout.strip().splitlines()[-1])["sentence_transformers"]
    assert np.array_equal(np.load(out), embedded[::-1])  # the very numbers, in the order asked

    more = embed_texts(["a caption never seen", *CAPTIONS])  # only the new one is encoded; the rest as kept
    assert np.array_equal(more[1:], embedded)
    assert np.allclose(more[0], encode_texts(["a caption never seen"])[0], atol=1e-6)
    assert embed_texts([]).shape == (0, 384)


def test_a_damaged_caption_cache_is_made_again_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FLYWHEEL_CACHE_DIR", str(tmp_path / "cache"))
    embedded = embed_texts(CAPTIONS)
    (path,) = (tmp_path / "cache" / TEXTS_CACHE).glob("*.sqlite")
    path.write_bytes(b"not a database, a copy cut short" * 100)
    for leftover in path.parent.glob("*.sqlite-*"):
        leftover.unlink()
    with caplog.at_level("WARNING", logger="models.text"):
        again = embed_texts(CAPTIONS)
    assert np.allclose(again, embedded, atol=1e-6) and "not a database this code wrote" in caplog.text
    assert np.array_equal(embed_texts(CAPTIONS), again)  # kept again in the new file


DISTINCT = ["a handwritten seven", "the digit two, spoken", "drei"]


def _key(text: str) -> bytes:  # a caption's key in the cache, as models.text makes it
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


def _kept_rows(cache: Path) -> int:
    (path,) = (cache / TEXTS_CACHE).glob("*.sqlite")
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]


def test_the_caption_cache_keeps_at_most_its_cap_dropping_the_oldest_first(tmp_path, monkeypatch):
    """A task whose captions are all different would grow the cache by 2.1 KB a row without end: past
    FLYWHEEL_TEXT_CACHE_MAX_ROWS, the rows written longest ago go, and a caption that went is encoded again."""
    monkeypatch.setenv("FLYWHEEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLYWHEEL_TEXT_CACHE_MAX_ROWS", "3")
    first = embed_texts(DISTINCT)
    assert _kept_rows(tmp_path / "cache") == 3
    later = embed_texts(["a fourth caption", "a fifth caption"])
    assert _kept_rows(tmp_path / "cache") == 3
    (path,) = (tmp_path / "cache" / TEXTS_CACHE).glob("*.sqlite")
    with closing(sqlite3.connect(path)) as connection:
        kept = {key for (key,) in connection.execute("SELECT key FROM embeddings")}
    assert len(kept & {_key(text) for text in DISTINCT}) == 1  # two of the first three went
    assert {_key("a fourth caption"), _key("a fifth caption")} <= kept
    assert np.allclose(embed_texts(DISTINCT), first, atol=1e-6)  # the dropped ones encoded again, same values
    assert np.allclose(embed_texts(["a fourth caption", "a fifth caption"]), later, atol=1e-6)

    monkeypatch.setenv("FLYWHEEL_TEXT_CACHE_MAX_ROWS", "0")  # no cache: the encoder, and the file left as it was
    assert np.allclose(embed_texts(["a sixth caption", *DISTINCT[:1]])[1:], first[:1], atol=1e-6)
    assert _kept_rows(tmp_path / "cache") == 3


def test_the_file_of_the_layout_before_is_removed_and_its_captions_encoded_again(tmp_path, monkeypatch):
    """Session 22's file (a WITHOUT ROWID table, 4.7 KB a row on disk, no cap) is not read: the first embedding
    by this code removes it, with its WAL files, and keeps the captions in the new file (2.1 KB a row)."""
    from models.text import TEXTS_LAYOUT, _texts_path

    monkeypatch.setenv("FLYWHEEL_CACHE_DIR", str(tmp_path / "cache"))
    path = _texts_path()
    before = path.with_name(path.name.replace(f".v{TEXTS_LAYOUT}.sqlite", ".sqlite"))
    assert before != path
    before.parent.mkdir(parents=True)
    with closing(sqlite3.connect(before)) as connection, connection:  # the table as session 22 made it
        connection.execute("CREATE TABLE embeddings (key BLOB PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID")
        connection.executemany("INSERT INTO embeddings VALUES (?, ?)",
                               ((_key(text), np.full(384, 7.0, np.float32).tobytes()) for text in DISTINCT))
    before.with_name(before.name + "-wal").write_bytes(b"")
    embedded = embed_texts(DISTINCT)
    assert np.allclose(embedded, encode_texts(DISTINCT), atol=1e-6)  # encoded, not the old file's values
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(path.name)) == []
    assert _kept_rows(tmp_path / "cache") == len(DISTINCT)


@pytest.mark.parametrize("value", ["-1", "lots", "2.5"])
def test_a_cap_that_cannot_work_stops_at_start_up(tmp_path, monkeypatch, value):
    from flows.settings import load_settings

    monkeypatch.setenv("FLYWHEEL_TEXT_CACHE_MAX_ROWS", value)
    with pytest.raises(ValueError, match="FLYWHEEL_TEXT_CACHE_MAX_ROWS=.*whole number"):
        load_settings(tmp_path / "home", PROJECT / "params.yaml")

"""The class prompts' embeddings are kept in flywheel's cache folder (models/text.py): a process that needs only
them reads them without importing sentence-transformers, and gets exactly what encoding gave."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from models.text import PROMPTS_CACHE, encode_class_prompts

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

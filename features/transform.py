"""Transform: per-sample tabular features (image, audio and caption statistics) for the feature store.

These are the columns drift monitoring watches and that training sets join by sample id.
"""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image

from features.label import NUMBER_WORDS, caption_label

# Centre-of-mass columns avoid "_x"/"_y" suffixes: Feast 0.67 duckdb retrieval drops such columns as join leftovers.
IMAGE_FEATURES = ("img_mean", "img_ink_ratio", "img_center_col", "img_center_row", "img_sharpness", "img_contrast")
AUDIO_FEATURES = ("aud_seconds", "aud_rms_db", "aud_peak", "aud_silence_ratio", "aud_centroid_hz", "aud_pitch_hz")
CAPTION_FEATURES = ("cap_chars", "cap_words", "cap_number_found")
NUMERIC_FEATURES: tuple[str, ...] = IMAGE_FEATURES + AUDIO_FEATURES + CAPTION_FEATURES
# `language` is what the manifest declares, `cap_language_detected` what the caption's words say.
CATEGORICAL_FEATURES: tuple[str, ...] = ("language", "cap_language_detected")
UNKNOWN_LANGUAGE = "unknown"

# Frequent function words per language (lower case, accents stripped), plus a few words about
# digits, writing and scanning, the subject of this project's captions. Number words come
# from features.label. A word several languages share counts for each, weighted 1/(how many).
FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "the a an of and or in on at to by with from for is are was this that it not be as has have"
        " written hand handwritten digit number scan scanned drawn picture image photo".split()
    ),
    "de": frozenset(
        "der die das den dem des ein eine einer einen einem und oder ist sind mit von zu auf fur im in"
        " nicht auch bei aus nach wie hand geschrieben handgeschrieben handgeschriebene ziffer zahl"
        " gescannt gescannte bild".split()
    ),
    "fr": frozenset(
        "le la les un une des du de et ou est sont a au aux avec pour par sur dans en ce cette il elle"
        " pas ne qui que main ecrit ecrite manuscrit manuscrite chiffre nombre numerise numerisee image".split()
    ),
    "es": frozenset(
        "el la los las un una unos unas y o es son de del en con por para al a que no se su esta este"
        " mano escrito escrita manuscrito manuscrita numero digito escaneado escaneada imagen".split()
    ),
    "it": frozenset(
        "il lo la i gli le un una uno di del della e o ed in con per su da sul sulla al alla che non si"
        " sono questo questa mano scritto scritta manoscritto manoscritta cifra numero scansionato"
        " scansionata immagine".split()
    ),
    "nl": frozenset(
        "de het een en van in op met te voor aan is zijn niet dat die er om bij uit ook als hand"
        " geschreven handgeschreven cijfer getal gescand gescande afbeelding".split()
    ),
}
LANGUAGE_WORDS: dict[str, frozenset[str]] = {
    language: words | frozenset(NUMBER_WORDS.get(language, ())) for language, words in FUNCTION_WORDS.items()
}

# How much one occurrence of a word tells: 1 for a word of one language, 1/k for a word k languages share.
_WORD_WEIGHT: dict[str, float] = {
    word: 1.0 / sum(word in words for words in LANGUAGE_WORDS.values())
    for word in frozenset().union(*LANGUAGE_WORDS.values())
}


def _words(text: str) -> list[str]:
    """Lower-case letter runs with accents stripped, the spelling of the word tables ("Fünf" -> "funf")."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return re.findall(r"[a-z]+", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def detect_language(text: str) -> str:
    """The language (a key of LANGUAGE_WORDS) whose words the text uses most, else UNKNOWN_LANGUAGE.

    Each word of the text scores its weight for every language that has it; a text with no
    known word, or whose best languages tie ("vier": German or Dutch), is UNKNOWN_LANGUAGE.
    """
    scores = dict.fromkeys(LANGUAGE_WORDS, 0.0)
    for word in _words(text):
        for language, words in LANGUAGE_WORDS.items():
            if word in words:
                scores[language] += _WORD_WEIGHT[word]
    best = max(scores.values())
    leaders = [language for language, score in scores.items() if math.isclose(score, best)]
    return leaders[0] if best > 0 and len(leaders) == 1 else UNKNOWN_LANGUAGE


def caption_stats(caption: str, declared_language: str | None) -> dict[str, object]:
    """Length, whether the caption names exactly one digit (in its declared language or any), and its language."""
    names_a_digit = caption_label(caption, declared_language) is not None or caption_label(caption, None) is not None
    return {
        "cap_chars": float(len(caption)),
        "cap_words": float(len(caption.split())),
        "cap_number_found": float(names_a_digit),
        "cap_language_detected": detect_language(caption),
    }


def image_stats(pixels: np.ndarray) -> dict[str, float]:
    """Intensity, ink share, centre of mass (0..1 of width/height) and sharpness (mean gradient)."""
    x = pixels.astype(np.float32) / 255.0
    mass = x.sum()
    rows, cols = np.indices(x.shape)
    com_y = float((rows * x).sum() / mass / max(x.shape[0] - 1, 1)) if mass else 0.5
    com_x = float((cols * x).sum() / mass / max(x.shape[1] - 1, 1)) if mass else 0.5
    grad_y, grad_x = np.gradient(x)
    return {
        "img_mean": float(x.mean()),
        "img_ink_ratio": float((x > 0.5).mean()),
        "img_center_col": com_x,
        "img_center_row": com_y,
        "img_sharpness": float(np.hypot(grad_x, grad_y).mean()),
        "img_contrast": float(x.std()),
    }


def audio_stats(wave: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Silence share (20 ms frames below -30 dB of peak) and spectral centroid of a normalised clip."""
    frame = max(int(0.02 * sample_rate), 1)
    usable = len(wave) // frame * frame
    frames = wave[:usable].reshape(-1, frame) if usable else wave[None, :]
    energy = np.sqrt((frames**2).mean(axis=1))
    silence = float((energy < 10 ** (-30 / 20)).mean())
    spectrum = np.abs(np.fft.rfft(wave))
    freqs = np.fft.rfftfreq(len(wave), 1.0 / sample_rate)
    centroid = float((spectrum * freqs).sum() / spectrum.sum()) if spectrum.sum() else 0.0
    return {"aud_silence_ratio": silence, "aud_centroid_hz": centroid, "aud_pitch_hz": estimate_pitch(wave, sample_rate)}


def estimate_pitch(wave: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 400.0) -> float:
    """Median fundamental frequency over voiced 40 ms frames, by normalised autocorrelation; NaN if unvoiced.

    A frame counts as voiced when it is within 30 dB of the clip's peak energy and its
    autocorrelation peak in the [fmin, fmax] lag range reaches 0.3 of the zero-lag value.
    """
    frame, hop = int(0.04 * sample_rate), int(0.02 * sample_rate)
    if len(wave) < frame:
        return float("nan")
    starts = range(0, len(wave) - frame + 1, hop)
    frames = np.stack([wave[i : i + frame] for i in starts]) * np.hanning(frame)
    energy = (frames**2).sum(axis=1)
    voiced = frames[energy >= energy.max() * 10 ** (-30 / 10)]
    spectrum = np.fft.rfft(voiced, n=2 * frame, axis=1)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :frame]
    lo, hi = int(sample_rate / fmax), min(int(sample_rate / fmin), frame - 1)
    lags = lo + autocorr[:, lo:hi].argmax(axis=1)
    strength = autocorr[np.arange(len(lags)), lags] / np.maximum(autocorr[:, 0], 1e-12)
    f0 = sample_rate / lags[strength >= 0.3]
    return float(np.median(f0)) if f0.size else float("nan")


FEATURE_COLUMNS: tuple[str, ...] = ("sample_id", "event_timestamp", "batch_id", *NUMERIC_FEATURES, *CATEGORICAL_FEATURES)
_CHUNK_ROWS = 4096  # rows whose per-row dicts exist at once; each chunk becomes a compact float32 frame


def _sample_record(clean_dir: Path, row, batch_id: str) -> dict[str, object]:
    record: dict[str, object] = dict.fromkeys(NUMERIC_FEATURES, np.nan) | {"cap_language_detected": None}
    record.update(sample_id=row.sample_id, event_timestamp=row.captured_at, batch_id=batch_id, language=row.language)
    if row.image:
        with Image.open(clean_dir / row.image) as image:
            record.update(image_stats(np.asarray(image)))
    if row.audio:
        wave, rate = sf.read(str(clean_dir / row.audio), dtype="float32")
        record.update(audio_stats(wave, rate))
        record.update(aud_seconds=row.audio_seconds, aud_rms_db=row.audio_rms_db, aud_peak=row.audio_peak)
    if row.caption:
        record.update(caption_stats(row.caption, row.language))
    return record


def _feature_frame(records: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=list(FEATURE_COLUMNS))
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame[list(NUMERIC_FEATURES)] = frame[list(NUMERIC_FEATURES)].astype("float32")
    return frame


def compute_sample_features(clean_dir: Path, rows: pd.DataFrame, batch_id: str) -> pd.DataFrame:
    """One row per clean sample: entity `sample_id`, `event_timestamp` = captured_at, then the stats.

    Rows are read in chunks, so memory holds the compact feature table and one chunk's records.
    """
    frames = [
        _feature_frame([_sample_record(clean_dir, row, batch_id)
                        for row in rows.iloc[start : start + _CHUNK_ROWS].itertuples(index=False)])
        for start in range(0, len(rows), _CHUNK_ROWS)
    ]
    return pd.concat(frames, ignore_index=True) if frames else _feature_frame([])

"""Behavioural test: ImageBind's emergent audio→text alignment on real digits and real speech.

Images are sklearn's 8×8 handwritten digits; audio is the digit's name spoken by espeak-ng in
several English accents; captions go through the frozen MiniLM. Training never sees an
(audio, text) pair, yet spoken digits of an accent held out from training must be classified
by their nearest text prompt far above chance (0.1).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from models.evaluate import EvalData, evaluate_model, evaluate_slices
from models.imagebind import ImageBindConfig
from models.text import encode_texts
from models.train import TrainingData, train_imagebind
from models.transforms import image_to_input, waveform_to_log_mel
from tests.unit.params_support import train_config

pytestmark = pytest.mark.slow

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_ACCENTS = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
# espeak voice variants change formants and pitch: more speakers per accent, better transfer.
VARIANTS = ("", "+f2", "+m3", "+f4", "+m7")
HELD_OUT_VOICES = ("en-us-nyc", "en-gb-x-gbcwmd")  # accents never heard in training
SPEEDS = (130, 175, 220)  # espeak words per minute
# One prompt per class, worded unlike any caption on purpose (the digits example's task.prompts).
PROMPTS = tuple(f"a handwritten digit {word}" for word in WORDS)
CAPTION_TEMPLATES = ("a handwritten {}", "the number {}", "a drawing of the digit {}", "{} written by hand")
SAMPLE_RATE = 16_000
KNOWN_LABEL_FRACTION = 0.2
SEED = 0
# Half the shipped schedule (params.yaml train: 40 + 30 epochs): the alignment is what is judged here, and half
# the epochs clear every bound below with room. Measured (session 18): image 0.914 / 0.881, audio 0.964 / 0.953,
# held-out voices >= 0.87 at seeds 0 / 1, against 0.975 / 0.978 for the whole schedule at seed 0; 22 s of training
# instead of 44 on one core.
EPOCHS = {"epochs_stage1": 20, "epochs_stage2": 15}


@dataclass(frozen=True)
class Clip:
    voice: str
    word: str
    speed: int


def synthesise(clips: list[Clip], directory: Path, config: ImageBindConfig) -> dict[Clip, np.ndarray]:
    """espeak-ng each clip once (in parallel) → (frames, n_mels) log-mel at 16 kHz."""

    def one(clip: Clip) -> np.ndarray:
        path = directory / f"{clip.voice}_{clip.word}_{clip.speed}.wav"
        subprocess.run(
            ["espeak-ng", "-w", str(path), "-v", clip.voice, "-s", str(clip.speed), clip.word],
            check=True,
            capture_output=True,
        )
        wave, rate = sf.read(path, dtype="float32")
        wave = resample_poly(wave, SAMPLE_RATE, rate).astype(np.float32)  # 22,050 → 16,000 Hz
        return waveform_to_log_mel(wave, SAMPLE_RATE, config.audio_n_mels, config.audio_frames)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(clips, pool.map(one, clips)))


@pytest.fixture(scope="module")
def digits_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingData, EvalData, np.ndarray, float]:
    """(training data, held-out eval data, prompt embeddings, seconds spent building them)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from sklearn.datasets import load_digits

    started = time.perf_counter()
    config = ImageBindConfig()
    rng = np.random.default_rng(SEED)
    digits = load_digits()
    images = np.rint(digits.images * 255 / 16).astype(np.uint8)  # 0..16 → 0..255 grayscale
    target = digits.target.astype(np.int64)
    index = np.arange(len(target))
    train_idx, eval_idx = index[index % 5 != 0], index[index % 5 == 0]

    train_voices = [accent + variant for accent in TRAIN_ACCENTS for variant in VARIANTS]
    clips = [Clip(v, w, s) for v in (*train_voices, *HELD_OUT_VOICES) for w in WORDS for s in SPEEDS]
    mels = synthesise(clips, tmp_path_factory.mktemp("espeak"), config)

    def spoken(label: int, voices: list[str] | tuple[str, ...]) -> tuple[str, np.ndarray]:
        voice = voices[rng.integers(len(voices))]
        return voice, mels[Clip(voice, WORDS[label], SPEEDS[rng.integers(len(SPEEDS))])]

    captions = [template.format(word) for word in WORDS for template in CAPTION_TEMPLATES]
    caption_emb = dict(zip(captions, encode_texts(captions)))
    train_labels = target[train_idx]
    known = rng.random(len(train_idx)) < KNOWN_LABEL_FRACTION
    train = TrainingData(
        image=np.stack([image_to_input(images[i], config.image_size) for i in train_idx]),
        audio=np.stack([spoken(int(k), train_voices)[1] for k in train_labels]),
        text_emb=np.stack(
            [caption_emb[CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))].format(WORDS[k])] for k in train_labels]
        ),
        label=np.where(known, train_labels, -1).astype(np.int64),
    )
    eval_labels = target[eval_idx]
    eval_audio = [spoken(int(k), HELD_OUT_VOICES) for k in eval_labels]
    held_out = EvalData(
        image=np.stack([image_to_input(images[i], config.image_size) for i in eval_idx]),
        label=eval_labels,
        groups={"voice": [voice for voice, _ in eval_audio]},  # the slice field the digits example judges
        audio=np.stack([mel for _, mel in eval_audio]),
    )
    prompt_emb = encode_texts(list(PROMPTS))
    return train, held_out, prompt_emb, time.perf_counter() - started


def test_emergent_audio_to_text_zero_shot_on_held_out_voices(
    digits_dataset: tuple[TrainingData, EvalData, np.ndarray, float],
) -> None:
    train, held_out, prompt_emb, build_seconds = digits_dataset
    result = train_imagebind(train, ImageBindConfig(), train_config(seed=SEED, **EPOCHS))
    metrics = evaluate_model(result.model, held_out, prompt_emb)
    slices = evaluate_slices(result.model, held_out, prompt_emb)
    print(
        f"\ndata {build_seconds:.1f}s, training {result.seconds:.1f}s, "
        f"{len(train)} train rows ({(train.label >= 0).mean():.0%} labelled), {len(held_out.label)} held out"
    )
    per_voice = {k: v for k, v in slices.items() if k.startswith("per_voice_")}
    print({k: round(v, 3) for k, v in {**metrics, **per_voice}.items()})

    assert metrics["zero_shot_image_acc"] >= 0.8, metrics
    assert metrics["zero_shot_audio_acc"] >= 0.5, metrics  # emergent: no (audio, text) pair trained
    assert metrics["audio_to_image_r1"] >= 0.5, metrics
    for voice in HELD_OUT_VOICES:
        assert slices[f"per_voice_audio_acc_{voice}"] >= 0.3, slices  # no accent left at chance

"""Real files → the tensors Meta's ImageBind checkpoint expects, at the official settings.

Settings follow the official `imagebind/data.py` (and the pytorchvideo clip sampler it pins);
the code is ours and uses Pillow, soundfile, scipy, numpy and the `transformers` CLIP
tokenizer instead of torchvision, torchaudio and pytorchvideo. Outputs, per item:
vision (3, 224, 224), text (77,) int64 ids, audio (3, 1, 128, 204), depth and thermal
(1, 224, 224); `load_official_inputs` batches them into the dict `ImageBind.forward` takes.

Known departures from the official pipeline, all small: audio is resampled with a polyphase
filter (scipy) rather than torchaudio's windowed sinc, and text is cleaned with `html.unescape`
and NFC normalisation but without ftfy's mojibake repair.
"""

from __future__ import annotations

import gzip
import html
import re
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from scipy.signal import resample_poly

from models.imagebind.config import AUDIO, DEPTH, TEXT, THERMAL, VISION
from models.imagebind.official import OFFICIAL_DEFAULTS, OFFICIAL_FIXED
from models.fbank import kaldi_mel_weights

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

IMAGE_SIZE: int = OFFICIAL_FIXED["image_size"]  # 224: vision, depth and thermal are square crops
# CLIP's per-channel RGB statistics, which the official vision transform normalises with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

AUDIO_SAMPLE_RATE = 16_000  # Hz; every file is resampled to it
AUDIO_CLIP_SECONDS = 2  # each clip covers 2 s: 198 fbank frames, padded to 204
AUDIO_CLIPS = 3  # clips per file, embedded one by one and averaged by the model
AUDIO_MEL_BINS: int = OFFICIAL_DEFAULTS["audio_num_mel_bins"]  # 128
AUDIO_FRAMES: int = OFFICIAL_DEFAULTS["audio_target_len"]  # 204
# The log-mel statistics the official audio transform standardises with (AudioSet-like data).
AUDIO_MEAN = -4.268
AUDIO_STD = 9.138

TEXT_CONTEXT_LENGTH: int = OFFICIAL_FIXED["text_context_length"]  # 77 ids per text
TEXT_VOCAB_SIZE: int = OFFICIAL_FIXED["text_vocab_size"]  # 49,408
START_OF_TEXT, END_OF_TEXT = "<|startoftext|>", "<|endoftext|>"  # ids 49406 and 49407


# --- images -------------------------------------------------------------------------------


def _resize_short_side_and_centre_crop(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so the short side is `size`, then the central size × size square.

    Sizes and offsets are computed as torchvision's `Resize(int)` and `CenterCrop` compute
    them (long side truncated, crop offset rounded half to even), so crops land on the same
    pixels as the official transform.
    """
    width, height = image.size
    short, long = sorted((width, height))
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    resized = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = round((new_w - size) / 2), round((new_h - size) / 2)
    return resized.crop((left, top, left + size, top + size))


def image_to_official_input(image: Image.Image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """A Pillow image → (3, size, size) float32: RGB, short side resized, centre crop, CLIP-normalised."""
    pixels = np.asarray(_resize_short_side_and_centre_crop(image.convert("RGB"), size), dtype=np.float32)
    scaled = torch.from_numpy(pixels / 255.0).permute(2, 0, 1)  # (H, W, 3) → (3, H, W) in [0, 1]
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32)[:, None, None]
    return (scaled - mean) / std


def single_channel_to_official_input(image: Image.Image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """A depth or thermal image → (1, size, size) float32 in [0, 1].

    The official repository ships no depth or thermal transform, so this is the obvious one:
    one channel, the vision path's short-side bicubic resize and centre crop, and values
    scaled to [0, 1] by the largest value the file's integer type can hold (255 for 8-bit,
    65,535 for 16-bit depth maps); float images are kept as they are. No normalisation.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float32) / 65535.0
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
    else:
        values = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    # Resized in float ("F" mode) so 16-bit precision survives the bicubic filter.
    cropped = _resize_short_side_and_centre_crop(Image.fromarray(values), size)
    return torch.from_numpy(np.array(cropped, dtype=np.float32))[None]


def load_official_image(path: str | Path) -> torch.Tensor:
    """An image file → (3, 224, 224) float32, as the official vision transform makes it."""
    with Image.open(path) as image:
        return image_to_official_input(image)


def load_official_single_channel(path: str | Path) -> torch.Tensor:
    """A depth or thermal image file → (1, 224, 224) float32 (see `single_channel_to_official_input`)."""
    with Image.open(path) as image:
        return single_channel_to_official_input(image)


# --- audio --------------------------------------------------------------------------------


def official_clip_bounds(
    n_samples: int, rate: int = AUDIO_SAMPLE_RATE, seconds: int = AUDIO_CLIP_SECONDS, clips: int = AUDIO_CLIPS
) -> list[tuple[int, int]]:
    """(start, end) sample indices of the clips the official audio transform cuts.

    Evenly spaced starts from 0 to `duration - seconds` (first, middle and last clip for
    three), as pytorchvideo's `ConstantClipsPerVideoSampler` places them; times are exact
    fractions truncated to samples. A file shorter than a clip gives `clips` copies of the
    whole file, which the fbank step then pads.
    """
    # From the float duration, as the official code computes it, so truncation agrees to the sample.
    latest_start = Fraction(max(n_samples / rate - seconds, 0))
    step = latest_start / max(clips - 1, 1)
    return [(int(step * i * rate), int((step * i + seconds) * rate)) for i in range(clips)]


def clip_to_official_fbank(
    clip: np.ndarray, rate: int = AUDIO_SAMPLE_RATE, n_mels: int = AUDIO_MEL_BINS, frames: int = AUDIO_FRAMES
) -> np.ndarray:
    """A mono clip → (1, n_mels, frames) float32 Kaldi log-mel filterbank, not yet standardised.

    The settings of the official call to `torchaudio.compliance.kaldi.fbank`: 25 ms Hanning
    frames every 10 ms (edges snipped), no dither, no energy term, power spectrum of a
    512-point FFT, and Kaldi's defaults: per-frame DC removal, pre-emphasis 0.97, 20 Hz
    lower edge, log floored at float32 epsilon. Frames past `frames` are dropped and
    missing ones are zeros, as officially.

    Written with numpy because kaldi-native-fbank, like Kaldi, refuses these settings: at
    16 kHz one of 128 mel triangles (bin 3) is narrower than an FFT bin, which Kaldi treats as
    an error and torchaudio as an empty filter. For settings it accepts, kaldi-native-fbank
    agrees with this function (see the tests).
    """
    length, shift = round(rate * 0.025), round(rate * 0.010)
    if clip.ndim != 1 or clip.size < length:
        raise ValueError(f"expected a 1-D clip of at least {length} samples (25 ms), got shape {clip.shape}")
    centred = np.asarray(clip, dtype=np.float64) - np.mean(clip)  # the official code centres each clip first
    n_frames = 1 + (centred.size - length) // shift
    x = centred[shift * np.arange(n_frames)[:, None] + np.arange(length)[None]]  # (n_frames, length)
    x = x - x.mean(axis=1, keepdims=True)
    x[:, 1:] -= 0.97 * x[:, :-1]  # pre-emphasis; the first sample is emphasised against itself
    x[:, 0] *= 1 - 0.97
    n_fft = 1 << (length - 1).bit_length()  # next power of two: 512 for 400 samples
    power = np.abs(np.fft.rfft(x * np.hanning(length), n=n_fft)) ** 2  # symmetric Hann, as Kaldi's "hanning"
    energies = power @ kaldi_mel_weights(n_mels, n_fft, rate).T  # (n_frames, n_mels)
    log_mel = np.log(np.maximum(energies, np.finfo(np.float32).eps))
    out = np.zeros((n_mels, frames), dtype=np.float32)
    kept = min(n_frames, frames)
    out[:, :kept] = log_mel[:kept].T
    return out[None]


def waveform_to_official_input(wave: np.ndarray, rate: int) -> torch.Tensor:
    """(T,) or (T, channels) samples at `rate` → (3, 1, 128, 204) float32 standardised log-mel clips.

    Only the first channel is used: the official code hands the multi-channel waveform to
    torchaudio's Kaldi fbank, which reads channel 0. It is resampled to 16 kHz, cut into
    the official clips, and each clip's fbank is standardised with the official mean and std.
    """
    if wave.ndim not in (1, 2) or wave.shape[0] == 0:
        raise ValueError(f"expected (samples,) or (samples, channels) audio, got shape {wave.shape}")
    mono = np.asarray(wave if wave.ndim == 1 else wave[:, 0], dtype=np.float64)
    if rate != AUDIO_SAMPLE_RATE:
        factor = gcd(rate, AUDIO_SAMPLE_RATE)
        mono = resample_poly(mono, AUDIO_SAMPLE_RATE // factor, rate // factor)
    clips = [clip_to_official_fbank(mono[start:end]) for start, end in official_clip_bounds(mono.size)]
    return (torch.from_numpy(np.stack(clips)) - AUDIO_MEAN) / AUDIO_STD


def load_official_audio(path: str | Path) -> torch.Tensor:
    """An audio file soundfile can read → (3, 1, 128, 204) float32, as the official audio transform makes it."""
    wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return waveform_to_official_input(wave, rate)


# --- text ---------------------------------------------------------------------------------


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: one printable character per byte, in vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first; the other 68 bytes (space,
    controls, ...) are mapped to code points from 256 upwards, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def read_clip_merges(bpe_path: str | Path, vocab_size: int = TEXT_VOCAB_SIZE) -> list[tuple[str, str]]:
    """The BPE merges of CLIP's `bpe_simple_vocab_16e6.txt.gz`, as many as a `vocab_size` vocabulary holds."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")
    n_merges = vocab_size - 2 * 256 - 2  # the rest are byte symbols, their word-final forms and two specials
    pairs = [line.split() for line in lines[1 : 1 + n_merges]]  # line 0 is a version header
    if len(pairs) < n_merges or any(len(pair) != 2 for pair in pairs):
        raise ValueError(
            f"{bpe_path} is not a CLIP BPE merges file with {n_merges} merges after its header "
            f"(found {len(pairs)} lines, or a line that is not two symbols)"
        )
    return [(left, right) for left, right in pairs]


@lru_cache(maxsize=4)
def build_clip_tokenizer(bpe_path: str) -> CLIPTokenizer:
    """`transformers.CLIPTokenizer` with the official vocabulary: 256 byte symbols, the same
    with "</w>", one token per merge in rank order, then start- and end-of-text. Offline."""
    from transformers import CLIPTokenizer  # heavy import; only text needs it

    merges = read_clip_merges(bpe_path)
    symbols = _byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), START_OF_TEXT, END_OF_TEXT]
    # The annotation says list[str], but the tokenizers BPE underneath only takes (left, right) pairs.
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)  # type: ignore[arg-type]


def tokenize_official(
    texts: Sequence[str], bpe_path: str | Path, context_length: int = TEXT_CONTEXT_LENGTH
) -> torch.Tensor:
    """Texts → (B, context_length) int64 ids as the official tokenizer gives them.

    Start-of-text, the BPE ids, end-of-text, then zeros; a long text is cut so that its last
    id is still end-of-text. Text is HTML-unescaped (twice, as officially), whitespace-collapsed
    and lowercased (the tokenizer's normaliser) before BPE.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
    tokenizer = build_clip_tokenizer(str(bpe_path))
    cleaned = [re.sub(r"\s+", " ", html.unescape(html.unescape(t))).strip() for t in texts]
    encoded = tokenizer(cleaned, truncation=True, max_length=context_length)["input_ids"]
    ids = torch.zeros(len(cleaned), context_length, dtype=torch.int64)
    for row, seq in zip(ids, encoded, strict=True):
        row[: len(seq)] = torch.tensor(seq, dtype=torch.int64)
    return ids


# --- all modalities -----------------------------------------------------------------------


def load_official_inputs(
    *,
    images: Sequence[str | Path] = (),
    texts: Sequence[str] = (),
    audios: Sequence[str | Path] = (),
    depths: Sequence[str | Path] = (),
    thermals: Sequence[str | Path] = (),
    bpe_path: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """Files and strings → {modality: batch} for `ImageBind.forward`; empty lists are left out.

    vision (B, 3, 224, 224), text (B, 77) int64, audio (B, 3, 1, 128, 204), depth and
    thermal (B, 1, 224, 224). Texts need `bpe_path`, the official `bpe_simple_vocab_16e6.txt.gz`.
    """
    batches: dict[str, torch.Tensor] = {}
    if images:
        batches[VISION] = torch.stack([load_official_image(p) for p in images])
    if texts:
        if bpe_path is None:
            raise ValueError("texts need bpe_path, the CLIP merges file bpe_simple_vocab_16e6.txt.gz; none was given")
        batches[TEXT] = tokenize_official(texts, bpe_path)
    if audios:
        batches[AUDIO] = torch.stack([load_official_audio(p) for p in audios])
    if depths:
        batches[DEPTH] = torch.stack([load_official_single_channel(p) for p in depths])
    if thermals:
        batches[THERMAL] = torch.stack([load_official_single_channel(p) for p in thermals])
    return batches

"""Official-settings input transforms: images, audio and text files → ImageBind's input tensors."""

from __future__ import annotations

import gzip
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest
import regex
import soundfile as sf
import torch
from PIL import Image

from models.imagebind import ImageBind, ImageBindConfig
from models.imagebind.transforms import (
    AUDIO_MEAN,
    AUDIO_STD,
    CLIP_MEAN,
    CLIP_STD,
    clip_to_official_fbank,
    image_to_official_input,
    load_official_audio,
    load_official_inputs,
    official_clip_bounds,
    read_clip_merges,
    single_channel_to_official_input,
    tokenize_official,
    waveform_to_official_input,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "imagebind"
BPE = SHARED / "bpe_simple_vocab_16e6.txt.gz"
EXAMPLES = ("bird", "car", "dog")
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/imagebind (official example files) is absent")
SOT, EOT = 49406, 49407


# --- images -------------------------------------------------------------------------------


def test_a_solid_colour_becomes_its_clip_normalised_value() -> None:
    out = image_to_official_input(Image.new("RGB", (300, 500), (255, 0, 102)))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    expected = [(v / 255 - m) / s for v, m, s in zip((255, 0, 102), CLIP_MEAN, CLIP_STD, strict=True)]
    for channel, value in enumerate(expected):
        torch.testing.assert_close(out[channel], torch.full((224, 224), value), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(224, 448), (448, 896), (896, 448), (300, 224)])
def test_short_side_is_resized_to_224_and_the_centre_is_kept(size: tuple[int, int]) -> None:
    # Left/top half red, right/bottom half blue: a centre crop splits them at the middle.
    width, height = size
    image = Image.new("RGB", size, (255, 0, 0))
    tall = height > width
    image.paste((0, 0, 255), (0, height // 2, width, height) if tall else (width // 2, 0, width, height))
    red = image_to_official_input(image)[0]  # (224, 224), high where red
    first, second = (red[:100], red[124:]) if tall else (red[:, :100], red[:, 124:])
    high, low = (1 - CLIP_MEAN[0]) / CLIP_STD[0], -CLIP_MEAN[0] / CLIP_STD[0]
    assert torch.allclose(first, torch.tensor(high), atol=1e-4)
    assert torch.allclose(second, torch.tensor(low), atol=1e-4)


@needs_shared
def test_official_example_images_become_normalised_rgb_crops() -> None:
    batch = load_official_inputs(images=[SHARED / f"{name}_image.jpg" for name in EXAMPLES])["vision"]
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32
    lowest = torch.tensor([-m / s for m, s in zip(CLIP_MEAN, CLIP_STD, strict=True)])[:, None, None]
    highest = torch.tensor([(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD, strict=True)])[:, None, None]
    assert bool(((batch >= lowest - 1e-5) & (batch <= highest + 1e-5)).all())
    assert batch.std(dim=(1, 2, 3)).min() > 0.3  # real photographs, not a constant
    assert not torch.allclose(batch[0], batch[1])


@pytest.mark.parametrize(
    ("image", "value"),
    [
        (Image.new("L", (300, 400), 51), 51 / 255),
        (Image.new("RGB", (400, 300), (51, 51, 51)), 51 / 255),
        (Image.fromarray(np.full((300, 400), 32768, dtype=np.uint16)), 32768 / 65535),  # 16-bit depth map
    ],
)
def test_depth_and_thermal_images_are_one_channel_in_unit_range(image: Image.Image, value: float) -> None:
    out = single_channel_to_official_input(image)
    assert out.shape == (1, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((1, 224, 224), value), atol=1e-5, rtol=0)


# --- audio --------------------------------------------------------------------------------


def _tone(freq: float, seconds: float, rate: int = 16_000, noise: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)).astype(np.float32)


def _mel_bin_of(freq: float, n_mels: int = 128, rate: int = 16_000) -> int:
    """The mel bin whose triangle is centred nearest `freq` on Kaldi's mel scale (20 Hz to Nyquist)."""
    mel = lambda f: 1127 * np.log(1 + f / 700)  # noqa: E731
    step = (mel(rate / 2) - mel(20)) / (n_mels + 1)
    centres = mel(20) + step * np.arange(1, n_mels + 1)
    return int(np.argmin(np.abs(centres - mel(freq))))


@pytest.mark.parametrize("n_mels", [64, 80])
def test_fbank_agrees_with_kaldi_native_fbank_where_it_accepts_the_settings(n_mels: int) -> None:
    clip = _tone(440, 2.0, noise=0.05)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.mel_opts.num_bins = n_mels
    opts.use_energy = False
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16_000, clip)
    fbank.input_finished()
    expected = np.array([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])  # (198, n_mels)
    ours = clip_to_official_fbank(clip, n_mels=n_mels, frames=expected.shape[0])[0].T
    np.testing.assert_allclose(ours, expected, atol=2e-3)


def test_128_bins_keep_torchaudio_s_empty_bin_and_pad_to_204_frames_with_zeros() -> None:
    fbank = clip_to_official_fbank(_tone(440, 2.0, noise=0.05))[0]  # (128, 204)
    assert fbank.shape == (128, 204) and fbank.dtype == np.float32
    floor = np.log(np.finfo(np.float32).eps)
    # At 16 kHz bin 3's triangle falls between two FFT bins: torchaudio gives it the log floor.
    np.testing.assert_allclose(fbank[3, :198], floor, rtol=1e-6)
    assert (np.delete(fbank[:, :198], 3, axis=0) > floor + 1).any(axis=1).all()  # only bin 3 is always empty
    assert (fbank[:, 198:] == 0).all()  # 2 s make 198 frames; the official code pads with 0


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_a_tone_peaks_in_its_mel_bin(freq: float) -> None:
    fbank = clip_to_official_fbank(_tone(freq, 2.0))[0, :, :198]
    assert abs(int(fbank.mean(axis=1).argmax()) - _mel_bin_of(freq)) <= 1


def test_three_two_second_clips_first_middle_and_last() -> None:
    assert official_clip_bounds(5 * 16_000) == [(0, 32_000), (24_000, 56_000), (48_000, 80_000)]
    assert official_clip_bounds(2 * 16_000) == [(0, 32_000)] * 3
    assert official_clip_bounds(16_000) == [(0, 32_000)] * 3  # shorter than a clip: the whole file, thrice


def test_audio_clips_are_cut_where_the_sound_is_and_standardised() -> None:
    # 300 Hz for the first 2.5 s, then 2 kHz: the first clip hears 300 Hz, the last 2 kHz.
    wave = np.concatenate([_tone(300, 2.5), _tone(2000, 2.5)])
    out = waveform_to_official_input(wave, 16_000)
    assert out.shape == (3, 1, 128, 204) and out.dtype == torch.float32
    peaks = out[:, 0, :, :198].mean(dim=-1).argmax(dim=-1).tolist()
    assert abs(peaks[0] - _mel_bin_of(300)) <= 1 and abs(peaks[2] - _mel_bin_of(2000)) <= 1
    middle = (clip_to_official_fbank(wave[24_000:56_000]) - AUDIO_MEAN) / AUDIO_STD
    torch.testing.assert_close(out[1], torch.from_numpy(middle))
    torch.testing.assert_close(out[:, 0, :, 198:], torch.full((3, 128, 6), -AUDIO_MEAN / AUDIO_STD))


def test_files_are_resampled_to_16_khz_and_read_from_the_first_channel(tmp_path: Path) -> None:
    rate = 44_100
    stereo = np.stack([_tone(1000, 3.0, rate), _tone(3000, 3.0, rate)], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, rate)
    out = load_official_audio(tmp_path / "stereo.wav")
    assert out.shape == (3, 1, 128, 204)
    peaks = out[:, 0, :, :198].mean(dim=-1).argmax(dim=-1)
    assert all(abs(int(p) - _mel_bin_of(1000)) <= 1 for p in peaks)


def test_audio_shorter_than_one_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 400 samples"):
        waveform_to_official_input(np.zeros(100, dtype=np.float32), 16_000)


@needs_shared
def test_official_example_sounds_become_three_standardised_clips_each() -> None:
    batch = load_official_inputs(audios=[SHARED / f"{name}_audio.wav" for name in EXAMPLES])["audio"]
    assert batch.shape == (3, 3, 1, 128, 204) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all()
    spoken = batch[..., :198]
    assert spoken.std() > 0.2 and abs(float(spoken.mean())) < 2  # standardised, not raw log energies


# --- text ---------------------------------------------------------------------------------


def _reference_tokenize(text: str) -> list[int]:
    """A plain, slow CLIP BPE written from the file format alone: the test's independent oracle."""
    lines = gzip.open(BPE).read().decode("utf-8").split("\n")[1 : 49408 - 512 - 2 + 1]
    ranks = {tuple(line.split()): rank for rank, line in enumerate(lines)}
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    byte_char = {b: chr(b) for b in printable}
    byte_char.update({b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in printable)})
    alphabet = [byte_char[b] for b in printable] + [byte_char[b] for b in range(256) if b not in printable]
    ids = {s: i for i, s in enumerate(alphabet + [s + "</w>" for s in alphabet] + ["".join(m) for m in ranks])}
    out = [SOT]
    words = regex.findall(r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+", " ".join(text.lower().split()))
    for word in words:
        parts = [byte_char[b] for b in word.encode("utf-8")]
        parts[-1] += "</w>"
        while len(parts) > 1:
            pair = min(zip(parts, parts[1:]), key=lambda p: ranks.get(p, float("inf")))
            if pair not in ranks:
                break
            i = next(i for i in range(len(parts) - 1) if (parts[i], parts[i + 1]) == pair)
            parts[i : i + 2] = ["".join(pair)]
        out += [ids[p] for p in parts]
    return out + [EOT]


@needs_shared
def test_a_dog_gives_clip_s_well_known_ids() -> None:
    ids = tokenize_official(["a dog"], BPE)
    assert ids.shape == (1, 77) and ids.dtype == torch.int64
    assert ids[0].tolist() == [SOT, 320, 1929, EOT] + [0] * 73


@needs_shared
def test_known_ids_follow_from_the_merges_file() -> None:
    # Ids 0-255 are byte symbols with "!" first, 256-511 the same with "</w>", then one per merge.
    assert 256 + ord("a") - ord("!") == 320
    lines = gzip.open(BPE).read().decode("utf-8").split("\n")[1:]
    dog_rank = next(i for i, line in enumerate(lines) if "".join(line.split()) == "dog</w>")
    assert 512 + dog_rank == 1929
    assert len(read_clip_merges(BPE)) == 49408 - 512 - 2


@needs_shared
@pytest.mark.parametrize(
    "text",
    [
        "A photo of a dog.",
        "Hello,   World! It's 2024 and they're here",
        "antidisestablishmentarianism unbelievably",
        "naïve café — 東京",
        "a bird's song; 3 cars!!",
    ],
)
def test_tokenizer_matches_an_independent_bpe(text: str) -> None:
    expected = _reference_tokenize(text)
    ids = tokenize_official([text], BPE)[0].tolist()
    assert ids == expected + [0] * (77 - len(expected))


@needs_shared
def test_long_texts_are_cut_with_end_of_text_kept_and_short_ones_zero_padded() -> None:
    ids = tokenize_official(["dog " * 100, "a dog"], BPE)
    assert ids[0].tolist() == [SOT] + [1929] * 75 + [EOT]
    assert (ids[1, 4:] == 0).all()
    torch.testing.assert_close(tokenize_official(["fish &amp; chips"], BPE), tokenize_official(["fish & chips"], BPE))


def test_bad_text_inputs_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "merges.txt.gz"
    with gzip.open(bad, "wt") as f:
        f.write("#version: 0.2\na b\n")
    with pytest.raises(ValueError, match="48894 merges"):
        read_clip_merges(bad)
    with pytest.raises(TypeError, match="not one string"):
        tokenize_official("a dog", bad)
    with pytest.raises(ValueError, match="bpe_path"):
        load_official_inputs(texts=["a dog"])


# --- end to end ---------------------------------------------------------------------------


@needs_shared
def test_example_files_embed_with_a_small_official_architecture() -> None:
    tiny = {
        f"{m}_{part}": value
        for m in ("vision", "audio", "text", "depth", "thermal", "imu")
        for part, value in (("embed_dim", 16), ("num_blocks", 1), ("num_heads", 2))
    }
    torch.manual_seed(0)
    model = ImageBind(ImageBindConfig.from_official_kwargs(out_embed_dim=8, **tiny)).eval()
    inputs = load_official_inputs(
        images=[SHARED / f"{name}_image.jpg" for name in EXAMPLES],
        audios=[SHARED / f"{name}_audio.wav" for name in EXAMPLES],
        texts=[f"A {name}." for name in EXAMPLES],
        depths=[SHARED / f"{name}_image.jpg" for name in EXAMPLES],
        bpe_path=BPE,
    )
    assert set(inputs) == {"vision", "audio", "text", "depth"}
    with torch.no_grad():
        out = model(inputs)
    assert set(out) == set(inputs)
    for modality, emb in out.items():
        assert emb.shape == (3, 8) and torch.isfinite(emb).all(), modality


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_with_the_cached_filter_gives_scipys_values(rate):
    """resample_mono designs each rate pair's filter once; the samples stay bit for bit scipy's own."""
    from math import gcd

    from scipy.signal import resample_poly

    from models.transforms import resample_mono

    rng = np.random.default_rng(rate)
    up, down = 16000 // gcd(rate, 16000), rate // gcd(rate, 16000)
    for wave in (rng.standard_normal(7001).astype(np.float32), rng.standard_normal((5003, 2))):
        mono = wave.mean(axis=1) if wave.ndim == 2 else wave
        expected = np.asarray(resample_poly(mono, up, down), dtype=np.float32)
        np.testing.assert_array_equal(resample_mono(wave, rate, 16000), expected)
        np.testing.assert_array_equal(resample_mono(wave, rate, 16000), expected)  # the second call: cached filter

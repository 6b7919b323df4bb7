"""Per-sample statistics that drift monitoring watches: they must respond to what they claim to measure."""

import numpy as np
import pytest

from features.transform import audio_stats, estimate_pitch, image_stats

SR = 16000


@pytest.mark.parametrize("f0", [90.0, 140.0, 250.0])
def test_pitch_of_a_harmonic_tone_is_its_fundamental(f0):
    t = np.arange(SR) / SR
    wave = np.sin(2 * np.pi * f0 * t) + 0.4 * np.sin(2 * np.pi * 2 * f0 * t)
    assert estimate_pitch(wave, SR) == pytest.approx(f0, rel=0.03)


def test_noise_and_silence_have_no_pitch():
    assert np.isnan(estimate_pitch(np.random.default_rng(0).normal(size=SR) * 0.1, SR))
    assert np.isnan(estimate_pitch(np.zeros(100), SR))


def test_silence_ratio_and_centroid_follow_the_signal():
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 440 * t)
    half_silent = np.concatenate([tone[: SR // 2], np.zeros(SR // 2)])
    assert audio_stats(tone, SR)["aud_silence_ratio"] == pytest.approx(0.0)
    assert audio_stats(half_silent, SR)["aud_silence_ratio"] == pytest.approx(0.5, abs=0.03)
    high = np.sin(2 * np.pi * 3000 * t)
    assert audio_stats(high, SR)["aud_centroid_hz"] > audio_stats(tone, SR)["aud_centroid_hz"]


def _numpy_reference(wave: np.ndarray) -> tuple[float, float]:
    """The centroid and pitch computed frame by frame with numpy: 40 ms Hann frames every 20 ms, each frame's
    magnitude spectrum summed for the centroid, the voiced frames' autocorrelations (padded to twice a frame,
    as flywheel computed them before issue 17) for the pitch."""
    from scipy.fft import next_fast_len

    frame, hop = int(0.04 * SR), int(0.02 * SR)
    frames = np.stack([wave[i : i + frame] for i in range(0, len(wave) - frame + 1, hop)]) * np.hanning(frame)
    n_fft = next_fast_len(frame + SR // 60, real=True)  # the spectra's length in features.transform
    spectrum = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)).sum(axis=0)
    centroid = float((spectrum * np.fft.rfftfreq(n_fft, 1.0 / SR)).sum() / spectrum.sum())
    energy = (frames**2).sum(axis=1)
    voiced = frames[energy >= energy.max() * 10 ** (-30 / 10)]
    autocorr = np.fft.irfft(np.abs(np.fft.rfft(voiced, n=2 * frame, axis=1)) ** 2, axis=1)[:, :frame]
    lo, hi = SR // 400, min(SR // 60, frame - 1)
    lags = lo + autocorr[:, lo:hi].argmax(axis=1)
    strength = autocorr[np.arange(len(lags)), lags] / np.maximum(autocorr[:, 0], 1e-12)
    f0 = SR / lags[strength >= 0.3]
    return centroid, float(np.median(f0)) if f0.size else float("nan")


@pytest.mark.parametrize("length", [6007, 11059, 17291])  # clip lengths are arbitrary, primes included
def test_the_batched_spectra_keep_the_features_within_1e_5_of_numpys_frame_by_frame(length):
    rng = np.random.default_rng(length)
    t = np.arange(length) / SR
    voiced = np.sin(2 * np.pi * 130 * t) + 0.5 * np.sin(2 * np.pi * 260 * t) + 0.05 * rng.normal(size=length)
    for wave in (voiced.astype(np.float32), (0.3 * rng.normal(size=length)).astype(np.float32)):
        stats = audio_stats(wave / np.abs(wave).max(), SR)
        centroid, pitch = _numpy_reference(wave / np.abs(wave).max())
        assert stats["aud_centroid_hz"] == pytest.approx(centroid, rel=1e-5)
        assert stats["aud_pitch_hz"] == pytest.approx(pitch, rel=1e-5, nan_ok=True)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_the_centroid_of_a_tone_is_its_frequency(freq):
    t = np.arange(SR) / SR
    assert audio_stats(np.sin(2 * np.pi * freq * t), SR)["aud_centroid_hz"] == pytest.approx(freq, rel=0.05)


def test_clips_described_together_match_one_by_one():
    """The clean stage describes a few clips at a time: each clip's values are those it gets alone, whatever
    its neighbours (a clip shorter than a frame, silence, noise, a tone, a long clip)."""
    from features.transform import AudioStatsBatcher, audio_stats_batch

    rng = np.random.default_rng(7)
    t = np.arange(2 * SR) / SR
    waves = [np.sin(2 * np.pi * 180 * t[: SR // 2]), rng.normal(size=300) * 0.2, np.zeros(5000),
             rng.normal(size=9001) * 0.3, np.sin(2 * np.pi * 120 * t) * np.hanning(2 * SR), np.ones(641)]
    waves = [w.astype(np.float32) for w in waves]
    alone = [audio_stats(w, SR) for w in waves]
    together = audio_stats_batch(waves, SR)
    batcher, records = AudioStatsBatcher(max_frames=60), [{} for _ in waves]  # flushes part-way through
    for record, wave in zip(records, waves):
        batcher.add(record, wave, SR)
    batcher.finish()
    for i, expected in enumerate(alone):
        assert records[i] == pytest.approx(expected, nan_ok=True)
        assert {name: together[name][i] for name in expected} == pytest.approx(expected, nan_ok=True)
    assert alone[0]["aud_pitch_hz"] == pytest.approx(180, rel=0.03) and np.isnan(alone[1]["aud_pitch_hz"])


def test_image_centre_of_mass_and_ink_follow_the_strokes():
    image = np.zeros((10, 10), dtype=np.uint8)
    image[:, 8:] = 255  # a bar on the right
    stats = image_stats(image)
    assert stats["img_center_col"] > 0.8 and stats["img_center_row"] == pytest.approx(0.5)
    assert stats["img_ink_ratio"] == pytest.approx(0.2)
    assert image_stats(np.zeros((10, 10), np.uint8))["img_center_col"] == 0.5  # blank: centred by convention


def test_serving_prepares_raw_audio_as_training_saw_it(tmp_path):
    """A raw clip sent to the logged model gets the clean stage's resampling, trim and normalisation,
    so serving sees the log-mel that training saw (no train/serve skew)."""
    import soundfile as sf

    from features.decode import decode_audio
    from models.pyfunc import ImageBindPyfunc
    from models.transforms import waveform_to_log_mel

    rate = 22050
    t = np.arange(int(0.6 * rate)) / rate
    tone = 0.4 * np.sin(2 * np.pi * 220 * t) * np.hanning(len(t))
    clip = np.concatenate([np.zeros(int(0.5 * rate)), tone, np.zeros(int(0.2 * rate))])  # leading silence to trim
    path = tmp_path / "clip.wav"
    sf.write(path, np.stack([clip, clip], axis=1).astype(np.float32), rate)  # stereo at 22.05 kHz
    spec = {"sample_rate": 16000, "silence_db": 40.0, "n_mels": 40, "audio_frames": 100}

    trained_on = waveform_to_log_mel(decode_audio(path, 16000, 30.0, 40.0).wave, 16000, 40, 100)
    served = ImageBindPyfunc()
    served.spec = spec
    np.testing.assert_allclose(served._audio(str(path)), trained_on, atol=1e-4)


def test_an_rgb_image_is_described_by_its_brightness(tmp_path):
    """A 3-channel task's clean PNGs are RGB; the image features are those of its grayscale view."""
    import pandas as pd
    from PIL import Image

    from features.transform import compute_sample_features

    rgb = np.zeros((10, 10, 3), dtype=np.uint8)
    rgb[:, 8:] = (255, 0, 0)  # a red bar on the right
    (tmp_path / "images").mkdir()
    Image.fromarray(rgb).save(tmp_path / "images" / "a.png")
    rows = pd.DataFrame({"sample_id": ["a"], "captured_at": [pd.Timestamp("2026-01-01", tz="UTC")],
                         "image": ["images/a.png"], "audio": [None], "caption": [None], "language": [None]})
    features = compute_sample_features(tmp_path, rows, "b1").iloc[0]
    luma = image_stats(np.asarray(Image.fromarray(rgb).convert("L")))
    assert features["img_mean"] == pytest.approx(luma["img_mean"]) and features["img_center_col"] > 0.8
    assert 0 < features["img_mean"] < 0.2 * 76 / 255 + 1e-6  # red is dark in luma (76/255), 20 % of the pixels


def test_a_chunks_images_described_together_match_one_by_one():
    from features.transform import ImageStatsBatcher

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(5)]
    images += [np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8), rng.integers(0, 256, (9, 31), np.uint8),
               rng.integers(0, 256, (3, 2), np.uint8)]  # all-black, all-white, a shape of its own, a tiny one
    batcher, records = ImageStatsBatcher(rows=4), [{} for _ in images]
    for record, image in zip(records, images):
        batcher.add(record, image)
    batcher.finish()
    for record, image in zip(records, images):
        expected = image_stats(image)
        assert record.keys() == expected.keys()
        for name, value in expected.items():
            assert record[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name

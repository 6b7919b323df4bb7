"""flywheel's Kaldi filterbank (numpy, a few clips at a time) against kaldi-native-fbank, which it replaced in
`models.transforms.waveform_to_log_mel` for speed (issue 17): same model inputs within float32 rounding."""

import numpy as np
import pytest

# What `waveform_to_log_mel` returned before: kaldi-native-fbank's defaults, no dither, cropped or padded (the
# issue-17 benchmark's bare loop computes it so)
from benchmarks.data_plane import kaldi_native_log_mel as _kaldi_native
from models.fbank import LOG_MEL_FLOOR, waveform_to_log_mel, waveforms_to_log_mel


def _speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A gliding harmonic voice with breath noise and a quiet gap, peak-normalised, as clean leaves a clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110 + 60 * t / max(seconds, 1e-9)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.2 + np.abs(np.sin(3 * t)))
    wave += 0.02 * rng.normal(size=t.size)
    wave[len(t) // 3 : len(t) // 3 + rate // 20] *= 1e-3
    return (wave / np.abs(wave).max()).astype(np.float32)


@pytest.mark.parametrize(("rate", "n_mels"), [(16_000, 40), (16_000, 80), (8_000, 23)])
def test_the_log_mel_matches_kaldi_native_fbank(rate, n_mels):
    for seed, seconds in enumerate((0.3, 0.77, 1.0, 1.9)):  # padded, padded, cropped by one frame, cropped
        wave = _speechlike(seconds, rate, seed)
        ours = waveform_to_log_mel(wave, rate, n_mels, 100)
        np.testing.assert_allclose(ours, _kaldi_native(wave, rate, n_mels, 100), atol=1e-3)
        assert ours.dtype == np.float32 and ours.shape == (100, n_mels)


def test_clips_analysed_together_get_the_values_they_get_alone():
    waves = [_speechlike(s, 16_000, i) for i, s in enumerate((0.5, 0.01, 1.3, 0.0251, 0.8))]  # 0.01 s: no frame
    together = waveforms_to_log_mel(waves, 16_000, 40, 100)
    for wave, values in zip(waves, together):
        np.testing.assert_array_equal(values, waveform_to_log_mel(wave, 16_000, 40, 100))
    assert (together[1] == LOG_MEL_FLOOR).all() and (together[3][1:] == LOG_MEL_FLOOR).all()  # one frame in 25.1 ms


def test_a_filterbank_kaldi_would_refuse_is_refused_by_name():
    with pytest.raises(ValueError, match="narrower than one FFT bin.*transform.n_mels"):
        waveform_to_log_mel(_speechlike(0.5, 16_000, 0), 16_000, 128, 100)


def test_params_with_such_a_filterbank_stop_at_start_up(tmp_path):
    from pathlib import Path

    import yaml

    from flows.settings import load_params

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    raw.setdefault("transform", {})["n_mels"] = 128
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="128 mel bins at 16000 Hz.*lower transform.n_mels"):
        load_params(tmp_path / "params.yaml")

"""Request payloads → model inputs, prepared exactly as the transform stage prepares lake files.

Every way a payload can be unusable (not base64, not an image, not audio, not a sensor array,
too large, silent, empty text) raises `BadInput` with a message naming what was wrong and what is
accepted, so the API answers 4xx and never 5xx for bad input. Depth and thermal maps and IMU series
arrive as `.npy` files, the format the clean stage keeps them in.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from models.serving.spec import encode_text_item

DEFAULT_SILENCE_DB = 40.0  # models logged before input_spec.json recorded the clean stage's trim level
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000  # outside this, resampling costs grow without bound


class BadInput(ValueError):
    """A payload the service cannot use; the message says why (the API answers 422 with it)."""


@dataclass(frozen=True)
class PayloadLimits:
    max_image_pixels: int  # larger images are refused from their header, before decoding (decompression bombs)
    max_audio_seconds: float  # longer clips are refused from their header, before decoding
    max_text_chars: int  # longer texts are refused


@dataclass(frozen=True)
class PreparedInput:
    modality: str  # "image", "audio", "text", "depth", "thermal" or "imu"
    values: np.ndarray  # one item's model input: (C, S, S) image, (T, M) log-mel, (384,) sentence embedding,
                        # (1, S, S) sensor map or (6, L) IMU series (a text model: the text itself, 0-d)
    features: dict[str, Any]  # input summary for the inference log


def decode_base64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadInput(f"data_base64 is not valid base64 ({err}); send the file's bytes base64-encoded") from err


def input_summary(modality: str, values: np.ndarray) -> dict[str, float]:
    """Statistics of the model input itself: the same for API requests and batch scoring of lake inputs."""
    if modality == "text":
        return {}
    return {"input_mean": round(float(values.mean()), 5), "input_std": round(float(values.std()), 5)}


def prepare_image(data: bytes, spec: dict[str, Any], limits: PayloadLimits) -> PreparedInput:
    """Image file bytes (any format Pillow reads) → (C, S, S) input, grayscale or RGB as the model was
    trained (`image_channels`), converted exactly as the transform stage converts lake files."""
    from PIL import Image

    from models.transforms import image_mode, image_to_input

    mode = image_mode(spec.get("image_channels", 1))
    try:
        with Image.open(io.BytesIO(data)) as handle:
            width, height = handle.size
            if width * height > limits.max_image_pixels:
                raise BadInput(f"image is {width}x{height} = {width * height} pixels; at most {limits.max_image_pixels} accepted")
            pixels_in_mode = np.asarray(handle.convert(mode))
            gray = pixels_in_mode if mode == "L" else np.asarray(handle.convert("L"))
    except BadInput:
        raise
    except Exception as err:  # Pillow raises many types (OSError, SyntaxError, DecompressionBombError, …)
        raise BadInput(f"payload is not a decodable image ({type(err).__name__}: {err}); send PNG, JPEG, BMP, …") from err
    values = image_to_input(pixels_in_mode, spec["image_size"])
    pixels = gray.astype(np.float32) / 255.0
    features = {"image_width": width, "image_height": height, "img_mean": round(float(pixels.mean()), 5),
                "img_contrast": round(float(pixels.std()), 5)}
    return PreparedInput("image", values, {**features, **input_summary("image", values)})


def prepare_audio(data: bytes, spec: dict[str, Any], limits: PayloadLimits) -> PreparedInput:
    """Audio file bytes (WAV, FLAC, OGG, … as libsndfile reads them) → (T, M) log-mel, as the clean and
    transform stages prepare a clip: mono at the model's rate, silence trimmed, peak-normalised."""
    import soundfile as sf

    from models.transforms import prepare_waveform, waveform_to_log_mel

    try:
        info = sf.info(io.BytesIO(data))
        rate = int(info.samplerate)
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise BadInput(f"audio sample rate {rate} Hz is outside the accepted {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
        seconds = info.frames / rate
        if seconds > limits.max_audio_seconds:
            raise BadInput(f"audio is {seconds:.1f} s long; at most {limits.max_audio_seconds:g} s accepted")
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except BadInput:
        raise
    except Exception as err:  # libsndfile errors (LibsndfileError, RuntimeError, TypeError on odd headers)
        raise BadInput(f"payload is not decodable audio ({type(err).__name__}: {err}); send WAV, FLAC or OGG") from err
    target = spec["sample_rate"]
    try:
        mono = prepare_waveform(wave, rate, target, spec.get("silence_db", DEFAULT_SILENCE_DB))
    except ValueError as err:
        raise BadInput(f"audio is unusable: {err}") from err
    values = waveform_to_log_mel(mono, target, spec["n_mels"], spec["audio_frames"])
    raw = wave.mean(axis=1)
    rms = float(np.sqrt(np.mean(raw.astype(np.float64) ** 2)))
    features = {"aud_seconds": round(len(raw) / rate, 4), "aud_rms_db": round(20 * np.log10(max(rms, 1e-10)), 3),
                "aud_sample_rate": rate}
    return PreparedInput("audio", values, {**features, **input_summary("audio", values)})


SENSOR_SHAPES = {"depth": "(H, W) map", "thermal": "(H, W) map", "imu": "(6, T) series"}
MAX_SENSOR_BYTES = 64 * 1024 * 1024  # a sensor array larger than this is refused before it is parsed


def prepare_sensor(modality: str, data: bytes, spec: dict[str, Any], limits: PayloadLimits) -> PreparedInput:
    """A depth or thermal map or an IMU series as `.npy` bytes (no pickles) → the model's input, scaled,
    resized or cropped as the transform stage prepares the lake's arrays."""
    from models.transforms import imu_to_input, sensor_map_to_input

    if len(data) > MAX_SENSOR_BYTES:
        raise BadInput(f"the {modality} array is {len(data)} bytes; at most {MAX_SENSOR_BYTES} accepted")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:  # not .npy, truncated, or an object array (pickles are refused)
        raise BadInput(f"the {modality} payload is not a .npy array ({type(err).__name__}: {err}); send "
                       f"numpy.save's bytes of a numeric {SENSOR_SHAPES[modality]}") from err
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf" or not np.isfinite(array).all():
        raise BadInput(f"the {modality} array must be finite numbers, got dtype {getattr(array, 'dtype', '?')}")
    try:
        values = (imu_to_input(array.astype(np.float32), spec["imu_length"]) if modality == "imu"
                  else sensor_map_to_input(array.astype(np.float32), spec[f"{modality}_size"]))
    except ValueError as err:
        raise BadInput(f"the {modality} array is unusable: {err}") from err
    return PreparedInput(modality, values, {f"{modality}_shape": "x".join(map(str, array.shape)),
                                            **input_summary(modality, values)})


def prepare_text(text: str, limits: PayloadLimits,
                 to_input: Callable[[str], np.ndarray] = encode_text_item) -> PreparedInput:
    """Text → the model's input for it, once checked: by default the frozen MiniLM sentence embedding a text
    tower takes; a family whose model reads text itself passes its own `to_input` (ServingSpec.prepare_text)."""
    if not text.strip():
        raise BadInput("text is empty; send at least one non-space character")
    if len(text) > limits.max_text_chars:
        raise BadInput(f"text has {len(text)} characters; at most {limits.max_text_chars} accepted")
    return PreparedInput("text", to_input(text), {"text_chars": len(text)})


def prepare_bytes(modality: str, data: bytes, spec: dict[str, Any], limits: PayloadLimits,
                  text_input: Callable[[str], np.ndarray] = encode_text_item) -> PreparedInput:
    """A file's bytes for any modality; text files must be UTF-8."""
    if modality == "text":
        try:
            return prepare_text(data.decode("utf-8"), limits, text_input)
        except UnicodeDecodeError as err:
            raise BadInput(f"text payload is not UTF-8 ({err})") from err
    preparers = {"image": prepare_image, "audio": prepare_audio,
                 **{kind: partial(prepare_sensor, kind) for kind in SENSOR_SHAPES}}
    if modality not in preparers:
        raise BadInput(f"unknown modality {modality!r}; accepted: text, {', '.join(preparers)}")
    if not data:
        raise BadInput(f"the {modality} payload is empty")
    return preparers[modality](data, spec, limits)

"""`ImageBindConfig`: every size and layout choice of the model, in one frozen dataclass.

The defaults are the small demo model that trains on a CPU in seconds. `huge()` and
`from_official_kwargs()` describe Meta's released architecture; the fields that differ
between the two are the ones marked "official:" below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from collections.abc import Iterable
from typing import Any

from models.imagebind.official import HUGE_OFFICIAL_KWARGS, official_config_fields

VISION = "vision"
TEXT = "text"
AUDIO = "audio"
DEPTH = "depth"
THERMAL = "thermal"
IMU = "imu"
# The audio conv front end halves the spectrogram twice before patching (ImageBindConfig.audio_conv_channels).
AUDIO_CONV_DOWNSAMPLE = 4
# The mel-pooling front end halves time twice and keeps every mel bin until its pool (audio_mel_pool_channels).
AUDIO_MEL_POOL_TIME_DOWNSAMPLE = 4
# Convolution layouts of the mel-pooling front end (ImageBindConfig.audio_mel_pool_layout; built in model.py).
AUDIO_MEL_POOL_LAYOUTS: tuple[str, ...] = ("two_5x3", "stride4_first", "one_9x7")
# Every modality the architecture knows, in the official module order; a config picks a subset.
MODALITIES: tuple[str, ...] = (VISION, TEXT, AUDIO, DEPTH, THERMAL, IMU)

# The modalities bound to the frozen image tower after image↔text, one training stage each, in this order.
BOUND_MODALITIES: tuple[str, ...] = (AUDIO, DEPTH, THERMAL, IMU)


def config_modalities(present: Iterable[str]) -> tuple[str, ...]:
    """`ImageBindConfig.modalities` for data that carries `present`: vision and text always (every
    modality binds to images, and classes are text prompts), plus each bound modality present.

    Vision, audio, text keeps the demo's build order, so a model of image, audio and text data is
    initialised exactly as before; depth, thermal and imu follow.
    """
    present = tuple(present)
    unknown = sorted(set(present) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; accepted: {list(MODALITIES)}")
    bound = [m for m in BOUND_MODALITIES if m in present]
    return (VISION, *bound[:1], TEXT, *bound[1:]) if AUDIO in bound else (VISION, TEXT, *bound)


@dataclass(frozen=True)
class ImageBindConfig:
    """Architecture of the model; saved beside the weights so a checkpoint rebuilds itself.

    Per-modality sizes follow one naming scheme, `{modality}_width|depth|heads|drop_path`
    (depth = number of transformer blocks), so towers are built by one generic loop.
    """

    embed_dim: int = 64  # size of the shared embedding space every modality is projected into
    # The demo binds three modalities; build order follows this tuple (it fixes the RNG order).
    modalities: tuple[str, ...] = (VISION, AUDIO, TEXT)
    # --- vision: (B, C, S, S) images, or (B, C, T, S, S) videos when vision_video_frames is set
    image_size: int = 16  # side S of the square input
    image_channels: int = 1  # C: 1 grayscale (the default small model), 3 RGB (the task's image_channels; official)
    patch_size: int = 4  # side of a square image patch; S / patch_size patches per side
    vision_video_frames: int | None = None  # None: 2-D patches of a still image; official: 2-frame clips
    vision_patch_frames: int = 2  # temporal extent of a patch when vision_video_frames is set
    vision_stem_norm: bool = True  # LayerNorm on the patch tokens; official vision has none
    vision_pre_norm: bool = False  # LayerNorm before the first block; official vision has one
    vision_width: int = 64  # token width of the vision transformer
    vision_depth: int = 2  # number of vision transformer blocks
    vision_heads: int = 4  # attention heads per vision block
    vision_drop_path: float = 0.0  # stochastic depth of the last block (linear from 0 at the first)
    # --- audio: log-mel spectrograms, (B, T, M) frames×mels or official (B, [clips,] 1, M, T)
    audio_n_mels: int = 40  # mel bins M
    audio_frames: int = 100  # frames T: 1 s at a 10 ms hop
    audio_patch_mels: int = 8  # mel extent of one audio patch
    audio_patch_frames: int = 20  # time extent of one patch (200 ms): half the tokens of 100 ms, same accuracy
    audio_stride: int | None = None  # None: patches tile the spectrogram; official: 10 (overlapping 16×16)
    audio_bias_kv: bool = False  # learnt extra key/value in attention; official audio has it
    # Channels of a small conv front end (two 3×3 convolutions of stride 2) before the patch projection;
    # 0: none, patches straight off the spectrogram (the official layout, which Meta's weights need).
    audio_conv_channels: int = 0
    # Channels of a conv front end that max-pools over each patch's mel band (two 5×3 mel×time convolutions,
    # time stride 2 each, then a max over the band's audio_patch_mels bins), so a token keeps which local spectral
    # pattern a band holds, not on which bin: less keyed on absolute mel position, which speakers move. Same patch
    # grid as the plain stem. 0: none (the official layout); exclusive with audio_conv_channels.
    audio_mel_pool_channels: int = 0
    # Its convolutions: "two_5x3" (5×3 mel×time, time stride 2, twice), "stride4_first" (a 5×5 of time stride 4,
    # then a 5×3 of stride 1: the second runs on half the frames, about half the CPU) or "one_9x7" (one 9×7 of
    # time stride 4, about a fifth of the CPU). Every layout keeps every mel bin until the band's max.
    audio_mel_pool_layout: str = "two_5x3"
    # Frequency max-pooling of the patch projection (Abdel-Hamid et al., 2014, CNNs for speech): each patch is
    # projected at every mel offset up to ± this many bins around its band and each channel keeps its largest
    # response, so a token stays the same when a speaker moves the band's formants by that much. Costs one wider
    # convolution, no extra layer. 0: off (the official layout); exclusive with the two front ends above.
    audio_mel_max_shift: int = 0
    audio_width: int = 64  # token width of the audio transformer
    audio_depth: int = 2  # number of audio transformer blocks
    audio_heads: int = 4  # attention heads per audio block
    audio_drop_path: float = 0.0  # stochastic depth of the last audio block; official: 0.1
    # Fixed log-mel standardisation (Meta does it in its data transform, so official configs use
    # 0 and 1): measured on the espeak demo corpus (mean -13.5, std 5.4, silence at log(eps) =
    # -15.9); −4/4 cost 4 points.
    audio_mean: float = -13.0  # log-mel value mapped to 0
    audio_std: float = 5.0  # log-mel spread mapped to 1
    # Per-utterance CMVN (each mel bin to zero mean, unit variance over the clip's frames) in place of
    # the fixed standardisation: loudness and channel colouring cancel out. False: models saved before it.
    audio_cmvn: bool = False
    # CMVN statistics over the clip's content frames only, not its padding (models.audio_augment.cmvn_speech_frames);
    # needs audio_cmvn. False: models saved before it.
    audio_cmvn_speech_only: bool = False
    # --- text: external sentence embeddings (B, text_input_dim), or token ids (B, context)
    text_input_dim: int | None = 384  # width of the frozen external encoder (MiniLM); None: native tower
    text_vocab_size: int = 49408  # token ids the native tower embeds (CLIP's BPE vocabulary)
    text_context_length: int = 77  # token positions of the native tower, causally masked
    text_width: int = 64  # token width of the native text transformer
    text_depth: int = 2  # number of native text transformer blocks
    text_heads: int = 4  # attention heads per native text block
    text_drop_path: float = 0.0  # stochastic depth of the last native text block
    # --- depth and thermal maps: (B, 1, S, S)
    depth_image_size: int = 16  # side of the square depth map; official: 224
    depth_patch_size: int = 4  # side of a depth patch; official: 16
    depth_width: int = 64  # token width of the depth transformer
    depth_depth: int = 2  # number of depth transformer blocks
    depth_heads: int = 4  # attention heads per depth block
    depth_drop_path: float = 0.0  # stochastic depth of the last depth block
    thermal_image_size: int = 16  # side of the square thermal map; official: 224
    thermal_patch_size: int = 4  # side of a thermal patch; official: 16
    thermal_width: int = 64  # token width of the thermal transformer
    thermal_depth: int = 2  # number of thermal transformer blocks
    thermal_heads: int = 4  # attention heads per thermal block
    thermal_drop_path: float = 0.0  # stochastic depth of the last thermal block
    # --- imu: (B, channels, length) accelerometer and gyroscope series
    imu_channels: int = 6  # 3 accelerometer + 3 gyroscope axes
    imu_length: int = 160  # samples per series; official: 2000
    imu_patch_size: int = 8  # samples per token (all channels together)
    imu_width: int = 64  # token width of the imu transformer
    imu_depth: int = 2  # number of imu transformer blocks
    imu_heads: int = 4  # attention heads per imu block
    imu_drop_path: float = 0.0  # stochastic depth of the last imu block; official: 0.7
    imu_head_dropout: float = 0.5  # dropout before the imu projection, as in the official head
    # --- shared
    mlp_ratio: float = 4.0  # transformer feed-forward width as a multiple of the token width
    dropout: float = 0.0  # attention and MLP dropout in the trunks; tiny models on tiny data do not need it
    block_norm_eps: float = 1e-5  # LayerNorm eps in blocks, pre-norms and heads; official: 1e-6
    official_init: bool = False  # official initialisation (xavier linears, scaled normal positions)
    text_logit_scale_init: float = 1 / 0.07  # initial learnable 1/temperature (CLIP's 0.07)
    audio_logit_scale: float = 20.0  # fixed 1/temperature for audio↔vision, as in ImageBind
    depth_logit_scale: float = 5.0  # fixed 1/temperature for depth, as in ImageBind
    thermal_logit_scale: float = 10.0  # fixed 1/temperature for thermal, as in ImageBind
    imu_logit_scale: float = 5.0  # fixed 1/temperature for imu, as in ImageBind
    max_logit_scale: float = 100.0  # clamp on the learnable scale so training cannot blow it up

    def __post_init__(self) -> None:
        # JSON gives lists back; keep the tuple so a reloaded config equals the saved one.
        object.__setattr__(self, "modalities", tuple(self.modalities))
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or len(set(self.modalities)) != len(self.modalities) or not self.modalities:
            raise ValueError(
                f"modalities {list(self.modalities)} must be distinct, non-empty and from {list(MODALITIES)}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.vision_video_frames is not None and self.vision_video_frames % self.vision_patch_frames:
            raise ValueError(
                f"vision_video_frames {self.vision_video_frames} must be a multiple of "
                f"vision_patch_frames {self.vision_patch_frames}"
            )
        if self.audio_stride is None and (
            self.audio_n_mels % self.audio_patch_mels or self.audio_frames % self.audio_patch_frames
        ):
            raise ValueError(
                f"audio input {self.audio_frames}×{self.audio_n_mels} (frames×mels) must be tiled "
                f"exactly by patches of {self.audio_patch_frames}×{self.audio_patch_mels} "
                "(or set audio_stride for overlapping patches)"
            )
        if self.audio_patch_mels > self.audio_n_mels or self.audio_patch_frames > self.audio_frames:
            raise ValueError(
                f"audio patch {self.audio_patch_frames}×{self.audio_patch_mels} is larger than "
                f"the input {self.audio_frames}×{self.audio_n_mels} (frames×mels)"
            )
        if self.audio_conv_channels < 0:
            raise ValueError(f"audio_conv_channels must be >= 0 (0: no conv front end), got {self.audio_conv_channels}")
        if self.audio_conv_channels and (
            self.audio_stride is not None
            or self.audio_patch_mels % AUDIO_CONV_DOWNSAMPLE or self.audio_patch_frames % AUDIO_CONV_DOWNSAMPLE
        ):
            raise ValueError(
                f"the audio conv front end shrinks the spectrogram {AUDIO_CONV_DOWNSAMPLE}x before patching: "
                f"audio_patch_mels ({self.audio_patch_mels}) and audio_patch_frames ({self.audio_patch_frames}) "
                f"must be multiples of {AUDIO_CONV_DOWNSAMPLE}, and audio_stride None (tiling patches)"
            )
        if self.audio_mel_pool_channels < 0:
            raise ValueError(f"audio_mel_pool_channels must be >= 0 (0: no mel-pooling front end), "
                             f"got {self.audio_mel_pool_channels}")
        if self.audio_mel_pool_channels and (
            self.audio_conv_channels or self.audio_stride is not None
            or self.audio_patch_frames % AUDIO_MEL_POOL_TIME_DOWNSAMPLE
        ):
            raise ValueError(
                f"the mel-pooling audio front end shrinks time {AUDIO_MEL_POOL_TIME_DOWNSAMPLE}x before patching: "
                f"audio_patch_frames ({self.audio_patch_frames}) must be a multiple of "
                f"{AUDIO_MEL_POOL_TIME_DOWNSAMPLE}, audio_stride None (tiling patches), and audio_conv_channels 0 "
                f"(got {self.audio_conv_channels}): one front end at a time"
            )
        if self.audio_mel_pool_layout not in AUDIO_MEL_POOL_LAYOUTS:
            raise ValueError(f"audio_mel_pool_layout must be one of {list(AUDIO_MEL_POOL_LAYOUTS)}, "
                             f"got {self.audio_mel_pool_layout!r}")
        if self.audio_mel_max_shift < 0:
            raise ValueError(f"audio_mel_max_shift must be >= 0 (0: off), got {self.audio_mel_max_shift}")
        if self.audio_mel_max_shift and (
            self.audio_conv_channels or self.audio_mel_pool_channels or self.audio_stride is not None
            or 2 * self.audio_mel_max_shift >= self.audio_n_mels
        ):
            raise ValueError(
                f"audio_mel_max_shift ({self.audio_mel_max_shift}) pools the plain patch projection: it needs "
                f"audio_stride None (tiling patches), audio_conv_channels and audio_mel_pool_channels 0 (got "
                f"{self.audio_conv_channels} and {self.audio_mel_pool_channels}), and a shift under half the "
                f"{self.audio_n_mels} mel bins"
            )
        if self.audio_cmvn_speech_only and not self.audio_cmvn:
            raise ValueError("audio_cmvn_speech_only changes which frames CMVN measures: it needs audio_cmvn True")
        if self.audio_std <= 0:
            raise ValueError(f"audio_std must be > 0, got {self.audio_std}")
        for name in (DEPTH, THERMAL):
            size, patch = getattr(self, f"{name}_image_size"), getattr(self, f"{name}_patch_size")
            if size % patch:
                raise ValueError(f"{name}_image_size {size} must be a multiple of {name}_patch_size {patch}")
        if self.imu_length % self.imu_patch_size:
            raise ValueError(f"imu_length {self.imu_length} must be a multiple of imu_patch_size {self.imu_patch_size}")
        for name in self.modalities:
            if name == TEXT and self.text_input_dim is not None:
                continue  # the external encoder has no trunk here
            width, heads = getattr(self, f"{name}_width"), getattr(self, f"{name}_heads")
            if width % heads:
                raise ValueError(f"{name}_width {width} must be divisible by {name}_heads {heads}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ImageBindConfig:
        """Inverse of `to_dict`; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ImageBindConfig fields {unknown}; accepted: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_official_kwargs(cls, **kwargs: Any) -> ImageBindConfig:
        """The architecture Meta's `ImageBindModel(**kwargs)` builds (same names and defaults).

        The resulting model's state_dict has the official keys and shapes, so official
        weights of that size load with `strict=True`.
        """
        return cls(**official_config_fields(**kwargs), modalities=MODALITIES)

    @classmethod
    def huge(cls) -> ImageBindConfig:
        """Meta's `imagebind_huge`: the 1.2 B-parameter checkpoint `imagebind_huge.pth`."""
        return cls.from_official_kwargs(**HUGE_OFFICIAL_KWARGS)

"""`ImageBind`: modality-keyed preprocessors → trunks → heads → postprocessors.

Four `nn.ModuleDict`s keyed by modality and one generic forward loop, as in Meta's
`imagebind_model.py`: a new modality is new dict entries, not new branches. The builders
below read `{modality}_width|depth|heads|drop_path` from the config.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from models.imagebind.config import (
    AUDIO, AUDIO_CONV_DOWNSAMPLE, AUDIO_MEL_POOL_LAYOUTS, AUDIO_MEL_POOL_TIME_DOWNSAMPLE, DEPTH, IMU, TEXT, THERMAL,
    VISION, ImageBindConfig,
)
from models.imagebind.heads import CLSHead, EmbeddingHead, EOTHead, LearnableLogitScaling, scaled_unit
from models.imagebind.legacy import upgrade_legacy_keys
from models.imagebind.preprocessors import (
    IMAGE_AS_VIDEO_FRAMES,
    AudioPreprocessor,
    EmbeddingInput,
    ImageToVideo,
    IMUPreprocessor,
    PatchPreprocessor,
    PatchStem,
    TextTokenPreprocessor,
)
from models.imagebind.transformer import PassThroughTrunk, Transformer


def _vision_preprocessor(c: ImageBindConfig) -> nn.Module:
    side = c.image_size // c.patch_size
    if c.vision_video_frames is None:  # a still image, 2-D patches
        proj: nn.Module = nn.Conv2d(c.image_channels, c.vision_width, c.patch_size, stride=c.patch_size, bias=False)
        time_steps, frame_patches = 1, None
    else:  # images become clips, 3-D patches (official)
        kernel = (c.vision_patch_frames, c.patch_size, c.patch_size)
        conv = nn.Conv3d(c.image_channels, c.vision_width, kernel, stride=kernel, bias=False)
        proj = nn.Sequential(ImageToVideo(IMAGE_AS_VIDEO_FRAMES), conv)
        time_steps, frame_patches = c.vision_video_frames // c.vision_patch_frames, side * side
    norm = nn.LayerNorm(c.vision_width) if c.vision_stem_norm else None
    return PatchPreprocessor(
        modality=VISION,
        stem_name="rgbt_stem",
        stem=PatchStem(proj, norm),
        input_shape=(c.image_channels, c.image_size, c.image_size),
        n_patches=time_steps * side * side,
        width=c.vision_width,
        frame_patches=frame_patches,
        official_init=c.official_init,
    )


def _audio_preprocessor(c: ImageBindConfig) -> nn.Module:
    kernel = (c.audio_patch_mels, c.audio_patch_frames)
    stride = kernel if c.audio_stride is None else (c.audio_stride, c.audio_stride)
    grid = [(size - k) // s + 1 for size, k, s in zip((c.audio_n_mels, c.audio_frames), kernel, stride)]
    if c.audio_conv_channels:
        conv = _audio_conv_front_end(c)
    elif c.audio_mel_pool_channels:
        conv = _audio_mel_pool_front_end(c)
    elif c.audio_mel_max_shift:
        conv = MelMaxPoolPatches(nn.Conv2d(1, c.audio_width, (c.audio_patch_mels, c.audio_patch_frames),
                                           stride=(1, c.audio_patch_frames), bias=False),
                                 c.audio_mel_max_shift, c.audio_patch_mels)
    else:
        conv = nn.Conv2d(1, c.audio_width, kernel, stride=stride, bias=False)
    return AudioPreprocessor(
        mean=c.audio_mean,
        std=c.audio_std,
        cmvn=c.audio_cmvn,
        cmvn_speech_only=c.audio_cmvn_speech_only,
        modality=AUDIO,
        stem_name="rgbt_stem",
        stem=PatchStem(conv, nn.LayerNorm(c.audio_width)),
        input_shape=(1, c.audio_n_mels, c.audio_frames),
        n_patches=grid[0] * grid[1],
        width=c.audio_width,
        official_init=c.official_init,
    )


def _audio_conv_front_end(c: ImageBindConfig) -> nn.Module:
    """Two 3×3 convolutions of stride 2 (local spectral and temporal patterns: formant transitions,
    onsets), then the patch projection over their 4× smaller map: the same patch grid, so the same
    tokens and positions as the plain patch stem."""
    hidden = c.audio_conv_channels
    down = AUDIO_CONV_DOWNSAMPLE
    return nn.Sequential(
        nn.Conv2d(1, hidden, 3, stride=2, padding=1), nn.GroupNorm(1, hidden), nn.GELU(),
        nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.GroupNorm(1, hidden), nn.GELU(),
        nn.Conv2d(hidden, c.audio_width, (c.audio_patch_mels // down, c.audio_patch_frames // down),
                  stride=(c.audio_patch_mels // down, c.audio_patch_frames // down), bias=False),
    )


def _audio_mel_pool_front_end(c: ImageBindConfig) -> nn.Module:
    """Convolutions over mels × time that shrink time 4× and keep every mel bin (audio_mel_pool_layout); then the
    largest response over each patch's band of audio_patch_mels bins, so a token tells which local spectral shape
    (a formant, its slope) its band holds and not on which bin; then the patch projection over time. The same patch
    grid, tokens and positions as the plain patch stem. (B, 1, M, T) → (B, width, M / patch_mels, T / patch_frames).

    Channels-last throughout: oneDNN's convolutions of a few channels run ~1.5× faster on the CPU in that layout."""
    hidden = c.audio_mel_pool_channels
    frames = c.audio_patch_frames // AUDIO_MEL_POOL_TIME_DOWNSAMPLE
    front = ChannelsLastSequential(
        *_MEL_POOL_CONVOLUTIONS[c.audio_mel_pool_layout](hidden),
        nn.MaxPool2d((c.audio_patch_mels, 1)),  # (B, hidden, M / patch_mels, T / 4)
        nn.Conv2d(hidden, c.audio_width, (1, frames), stride=(1, frames), bias=False),
    )
    return front.to(memory_format=torch.channels_last)


def _conv_norm_gelu(c_in: int, c_out: int, kernel: tuple[int, int], time_stride: int) -> list[nn.Module]:
    # "Same" padding along both axes: every mel bin keeps its row; time shrinks by the stride alone.
    conv = nn.Conv2d(c_in, c_out, kernel, stride=(1, time_stride), padding=(kernel[0] // 2, kernel[1] // 2))
    return [conv, nn.GroupNorm(1, c_out), nn.GELU()]


# audio_mel_pool_layout → its convolutions, (B, 1, M, T) → (B, hidden, M, T / 4).
_MEL_POOL_CONVOLUTIONS: dict[str, Callable[[int], list[nn.Module]]] = {
    "two_5x3": lambda h: [*_conv_norm_gelu(1, h, (5, 3), 2), *_conv_norm_gelu(h, h, (5, 3), 2)],
    "stride4_first": lambda h: [*_conv_norm_gelu(1, h, (5, 5), 4), *_conv_norm_gelu(h, h, (5, 3), 1)],
    "one_9x7": lambda h: _conv_norm_gelu(1, h, (9, 7), 4),
}
assert set(_MEL_POOL_CONVOLUTIONS) == set(AUDIO_MEL_POOL_LAYOUTS), "one builder per layout the config accepts"


class ChannelsLastSequential(nn.Sequential):
    """`nn.Sequential` run on its input in channels-last memory order: values, shapes and weight names unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last))


class MelMaxPoolPatches(nn.Module):
    """Patch projection at every mel offset, then each band's largest response over offsets within ±`shift` bins.

    `proj` slides one bin at a time along mels (stride 1) and tiles time; (B, 1, M, T) → (B, width, M / band,
    T / patch_frames), the plain stem's grid. The spectrogram's edge bins are repeated `shift` times either way,
    so the first and last bands see as many offsets as the others.
    """

    def __init__(self, proj: nn.Conv2d, shift: int, band: int) -> None:
        super().__init__()
        self.proj, self.shift = proj, shift
        self.pool = nn.MaxPool2d((2 * shift + 1, 1), stride=(band, 1))

    def forward(self, x: Tensor) -> Tensor:
        padded = nn.functional.pad(x, (0, 0, self.shift, self.shift), mode="replicate")  # (B, 1, M + 2 shift, T)
        return self.pool(self.proj(padded))  # (B, width, M + 2 shift - band + 1, T') → (B, width, M / band, T')


def _map_preprocessor(modality: str, stem_name: str) -> Callable[[ImageBindConfig], nn.Module]:
    # Depth and thermal: one-channel square maps, 2-D patches with a LayerNorm.
    def build(c: ImageBindConfig) -> nn.Module:
        size, patch = getattr(c, f"{modality}_image_size"), getattr(c, f"{modality}_patch_size")
        width = getattr(c, f"{modality}_width")
        conv = nn.Conv2d(1, width, patch, stride=patch, bias=False)
        return PatchPreprocessor(
            modality=modality,
            stem_name=stem_name,
            stem=PatchStem(conv, nn.LayerNorm(width)),
            input_shape=(1, size, size),
            n_patches=(size // patch) ** 2,
            width=width,
            official_init=c.official_init,
        )

    return build


def _text_preprocessor(c: ImageBindConfig) -> nn.Module:
    if c.text_input_dim is not None:
        return EmbeddingInput(TEXT, c.text_input_dim)
    return TextTokenPreprocessor(c.text_vocab_size, c.text_context_length, c.text_width, official_init=c.official_init)


def _imu_preprocessor(c: ImageBindConfig) -> nn.Module:
    return IMUPreprocessor(c.imu_channels, c.imu_length, c.imu_patch_size, c.imu_width, official_init=c.official_init)


_PREPROCESSORS: dict[str, Callable[[ImageBindConfig], nn.Module]] = {
    VISION: _vision_preprocessor,
    TEXT: _text_preprocessor,
    AUDIO: _audio_preprocessor,
    DEPTH: _map_preprocessor(DEPTH, "depth_stem"),
    THERMAL: _map_preprocessor(THERMAL, "rgbt_stem"),
    IMU: _imu_preprocessor,
}


def _trunk(c: ImageBindConfig, modality: str) -> nn.Module:
    if modality == TEXT and c.text_input_dim is not None:
        return PassThroughTrunk()  # the frozen sentence encoder already ran outside the model
    return Transformer(
        getattr(c, f"{modality}_width"),
        getattr(c, f"{modality}_depth"),
        getattr(c, f"{modality}_heads"),
        c.mlp_ratio,
        pre_norm=modality == VISION and c.vision_pre_norm,
        # Officially the sensor trunks learn an extra key/value; vision and text do not.
        bias_kv=modality in (DEPTH, THERMAL, IMU) or (modality == AUDIO and c.audio_bias_kv),
        drop_path=getattr(c, f"{modality}_drop_path"),
        dropout=c.dropout,
        norm_eps=c.block_norm_eps,
        official_init=c.official_init,
    )


def _head(c: ImageBindConfig, modality: str) -> nn.Module:
    if modality == TEXT:
        if c.text_input_dim is not None:
            return EmbeddingHead(c.text_input_dim, c.embed_dim, c.block_norm_eps)
        return EOTHead(c.text_width, c.embed_dim, c.block_norm_eps)
    dropout = c.imu_head_dropout if modality == IMU else None
    return CLSHead(getattr(c, f"{modality}_width"), c.embed_dim, c.block_norm_eps, dropout)


def _postprocessor(c: ImageBindConfig, modality: str) -> nn.Module:
    # Vision is the binding modality: unit vectors, no scale. Text's scale is learnt.
    scales = {
        VISION: None,
        TEXT: c.text_logit_scale_init,
        AUDIO: c.audio_logit_scale,
        DEPTH: c.depth_logit_scale,
        THERMAL: c.thermal_logit_scale,
        IMU: c.imu_logit_scale,
    }
    return scaled_unit(scales[modality], learnable=modality == TEXT, max_logit_scale=c.max_logit_scale)


def _upgrade_legacy_checkpoint(state_dict: dict[str, Tensor], prefix: str, *_: object) -> None:
    upgrade_legacy_keys(state_dict, prefix)


class ImageBind(nn.Module):
    """Embed any subset of `config.modalities` into one space.

    As in Meta's code, the postprocessor multiplies the unit-norm embedding by the modality's
    logit scale (text: learnable; audio, depth, thermal, imu: fixed; vision: none), so
    `vision @ text.T` and `audio @ vision.T` are already the InfoNCE logits. Directions, and
    therefore every cosine ranking, are unaffected; use `F.normalize` to compare across modalities.
    """

    def __init__(self, config: ImageBindConfig | None = None) -> None:
        super().__init__()
        self.config = config or ImageBindConfig()
        c, names = self.config, self.config.modalities
        # Built stage by stage (all preprocessors, then all trunks, ...): the demo's RNG order.
        self.modality_preprocessors = nn.ModuleDict({m: _PREPROCESSORS[m](c) for m in names})
        self.modality_trunks = nn.ModuleDict({m: _trunk(c, m) for m in names})
        self.modality_heads = nn.ModuleDict({m: _head(c, m) for m in names})
        self.modality_postprocessors = nn.ModuleDict({m: _postprocessor(c, m) for m in names})
        self._register_load_state_dict_pre_hook(_upgrade_legacy_checkpoint)

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """{modality: input} → {modality: (B, embed_dim) embedding} for each modality given.

        Inputs (one clip per row): "vision" (B, C, S, S); "text" (B, text_input_dim) sentence
        embeddings or (B, context) token ids; "audio" (B, T, M) or (B, 1, M, T) log-mel;
        "depth", "thermal" (B, 1, S, S); "imu" (B, 6, length). A 5-D or larger input is
        (B, clips, ...): each clip is embedded and the clip embeddings averaged, as officially.
        Outputs are unit vectors times the modality's logit scale (clip averages of those).
        """
        unknown = sorted(set(inputs) - set(self.config.modalities))
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; this model embeds {list(self.config.modalities)}")
        outputs: dict[str, Tensor] = {}
        for modality, value in inputs.items():
            batch, clips = value.shape[0], (value.shape[1] if value.ndim >= 5 else 0)
            if clips:
                value = value.reshape(batch * clips, *value.shape[2:])
            tokens = self.modality_preprocessors[modality](value)
            hidden = self.modality_trunks[modality](tokens.values, tokens.attn_mask)
            embedding = self.modality_heads[modality](hidden, tokens.pool_index)
            embedding = self.modality_postprocessors[modality](embedding)
            if clips:
                embedding = embedding.reshape(batch, clips, -1).mean(dim=1)
            outputs[modality] = embedding
        return outputs

    def logit_scale(self, modality: str) -> float:
        """The factor `modality`'s postprocessor multiplies unit embeddings by (1.0 if none)."""
        for module in self.tower_modules(modality)[-1].modules():
            if isinstance(module, LearnableLogitScaling):
                return float(module.scale().detach())
        return 1.0

    def tower_modules(self, modality: str) -> list[nn.Module]:
        """The preprocessor, trunk, head and postprocessor of one modality, in forward order."""
        if modality not in self.config.modalities:
            raise ValueError(f"unknown modality {modality!r}; this model embeds {list(self.config.modalities)}")
        parts = (self.modality_preprocessors, self.modality_trunks, self.modality_heads, self.modality_postprocessors)
        return [part[modality] for part in parts]

    def tower_parameters(self, modality: str) -> list[nn.Parameter]:
        """Every parameter that shapes `modality`'s embedding (to freeze or to optimise)."""
        return [p for module in self.tower_modules(modality) for p in module.parameters()]

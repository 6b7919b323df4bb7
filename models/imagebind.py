"""A small ImageBind: one embedding space for vision, audio and text, bound through images.

The layout follows Meta's `imagebind/models/imagebind_model.py`: four `nn.ModuleDict`s keyed
by modality (preprocessor → trunk → head → postprocessor) and one generic forward loop, so a
new modality is new dict entries rather than new branches, and a later `huge()` config can
map Meta's checkpoint keys onto the same names. The defaults are sized to train on a CPU.

Text arrives as precomputed sentence embeddings from a frozen external encoder
(`models.text`), so its preprocessor and trunk are identities and only its head is learnt.

As in Meta's code, the postprocessor multiplies the unit-norm embedding by the modality's
logit scale (text: learnable, audio: fixed, vision: none), so `vision @ text.T` and
`audio @ vision.T` are already the InfoNCE logits. Directions, and therefore every
cosine ranking, are unaffected; use `F.normalize` to compare across modalities.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VISION = "vision"
AUDIO = "audio"
TEXT = "text"
# Every modality the model can embed; the keys of `forward`'s input and output dicts.
MODALITIES: tuple[str, ...] = (VISION, AUDIO, TEXT)


@dataclass(frozen=True)
class ImageBindConfig:
    """Architecture of the model; saved beside the weights so a checkpoint rebuilds itself."""

    embed_dim: int = 64  # size of the shared embedding space every modality is projected into
    image_size: int = 16  # side S of the square grayscale input (B, 1, S, S)
    patch_size: int = 4  # side of a square image patch; S / patch_size patches per side
    vision_width: int = 64  # token width of the vision transformer
    vision_depth: int = 2  # number of vision transformer blocks
    vision_heads: int = 4  # attention heads per vision block
    audio_n_mels: int = 40  # mel bins M of the log-mel input (B, T, M)
    audio_frames: int = 100  # frames T of the log-mel input: 1 s at a 10 ms hop
    audio_patch_mels: int = 8  # mel extent of one audio patch
    audio_patch_frames: int = 20  # time extent of one patch (200 ms): half the tokens of 100 ms, same accuracy
    audio_width: int = 64  # token width of the audio transformer
    audio_depth: int = 2  # number of audio transformer blocks
    audio_heads: int = 4  # attention heads per audio block
    # Fixed log-mel standardisation (Meta does it in its data transform): measured on the
    # espeak demo corpus (mean -13.5, std 5.4, silence at log(eps) = -15.9); −4/4 cost 4 points.
    audio_mean: float = -13.0  # log-mel value mapped to 0
    audio_std: float = 5.0  # log-mel spread mapped to 1
    text_input_dim: int = 384  # width of the frozen text encoder's sentence embeddings (MiniLM)
    mlp_ratio: float = 4.0  # transformer feed-forward width as a multiple of the token width
    dropout: float = 0.0  # dropout in the trunks; tiny models on tiny data do not need it
    text_logit_scale_init: float = 1 / 0.07  # initial learnable 1/temperature (CLIP's 0.07)
    audio_logit_scale: float = 20.0  # fixed 1/temperature for audio↔vision, as in ImageBind
    max_logit_scale: float = 100.0  # clamp on the learnable scale so training cannot blow it up

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        if self.audio_n_mels % self.audio_patch_mels or self.audio_frames % self.audio_patch_frames:
            raise ValueError(
                f"audio input {self.audio_frames}×{self.audio_n_mels} (frames×mels) must be tiled "
                f"exactly by patches of {self.audio_patch_frames}×{self.audio_patch_mels}"
            )
        if self.audio_std <= 0:
            raise ValueError(f"audio_std must be > 0, got {self.audio_std}")
        for name, width, heads in (
            ("vision", self.vision_width, self.vision_heads),
            ("audio", self.audio_width, self.audio_heads),
        ):
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


class PatchTokenizer(nn.Module):
    """Patchify a 2-D map, prepend a CLS token and add learnt position embeddings.

    The shared stem of Meta's vision (RGBDTPreprocessor) and audio (AudioPreprocessor)
    preprocessors, reduced to one channel and no temporal axis.
    """

    def __init__(self, patch: tuple[int, int], grid: tuple[int, int], width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, kernel_size=patch, stride=patch, bias=False)
        self.stem_norm = nn.LayerNorm(width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, 1, H, W) → (B, 1 + N, C) with N = (H / ph) * (W / pw)
        tokens = self.stem(x).flatten(2).transpose(1, 2)  # (B, N, C)
        tokens = self.stem_norm(tokens)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # (B, 1, C)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed


class VisionPreprocessor(nn.Module):
    """(B, 1, S, S) image in [0, 1] → (B, 1 + (S/p)², C) tokens."""

    def __init__(self, config: ImageBindConfig) -> None:
        super().__init__()
        self.image_size = config.image_size
        side = config.image_size // config.patch_size
        patch = (config.patch_size, config.patch_size)
        self.tokenizer = PatchTokenizer(patch, (side, side), config.vision_width)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, self.image_size, self.image_size):
            raise ValueError(
                f"vision input must be (B, 1, {self.image_size}, {self.image_size}), got {tuple(x.shape)}"
            )
        return self.tokenizer(x)


class AudioPreprocessor(nn.Module):
    """(B, T, M) log-mel → (B, 1 + (M/pm)(T/pt), C) tokens, mel as the image's height axis."""

    def __init__(self, config: ImageBindConfig) -> None:
        super().__init__()
        self.frames, self.n_mels = config.audio_frames, config.audio_n_mels
        self.mean, self.std = config.audio_mean, config.audio_std
        grid = (config.audio_n_mels // config.audio_patch_mels, config.audio_frames // config.audio_patch_frames)
        patch = (config.audio_patch_mels, config.audio_patch_frames)
        self.tokenizer = PatchTokenizer(patch, grid, config.audio_width)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[1:] != (self.frames, self.n_mels):
            raise ValueError(
                f"audio input must be (B, {self.frames}, {self.n_mels}) log-mel, got {tuple(x.shape)}"
            )
        spec = ((x - self.mean) / self.std).transpose(1, 2).unsqueeze(1)  # (B, 1, M, T)
        return self.tokenizer(spec)


class TransformerTrunk(nn.Module):
    """Pre-LN transformer over tokens: (B, N, C) → (B, N, C)."""

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model=width,
            nhead=heads,
            dim_feedforward=int(width * mlp_ratio),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,  # pre-LN, as in ViT and ImageBind: stable without warm-up tricks
        )
        # Nested tensors only pay off with padding masks, and they warn under norm_first.
        self.blocks = nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.blocks(tokens)


class SelectElement(nn.Module):
    """Pick one token (the CLS token at index 0): (B, N, C) → (B, C). Meta's name."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.index]


class Normalize(nn.Module):
    """L2-normalise along `dim`, so similarities are cosines."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=self.dim)


class LearnableLogitScaling(nn.Module):
    """Multiply by exp(log_logit_scale), clamped; a Parameter if learnable, else a buffer.

    Storing the log keeps the scale positive under gradient steps (CLIP's parameterisation).
    """

    def __init__(self, logit_scale_init: float, learnable: bool, max_logit_scale: float) -> None:
        super().__init__()
        self.max_logit_scale = max_logit_scale
        log_scale = torch.full((1,), math.log(logit_scale_init))
        if learnable:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(self.log_logit_scale.exp(), max=self.max_logit_scale) * x


def _cls_head(width: int, embed_dim: int) -> nn.Module:
    # (B, N, C) → (B, D): normalise tokens, take CLS, project without bias (Meta's head).
    return nn.Sequential(nn.LayerNorm(width), SelectElement(0), nn.Linear(width, embed_dim, bias=False))


class ImageBind(nn.Module):
    """Embed any subset of `MODALITIES` into one space; see the module docstring."""

    def __init__(self, config: ImageBindConfig | None = None) -> None:
        super().__init__()
        self.config = config or ImageBindConfig()
        c = self.config
        self.modality_preprocessors = nn.ModuleDict(
            {VISION: VisionPreprocessor(c), AUDIO: AudioPreprocessor(c), TEXT: nn.Identity()}
        )
        self.modality_trunks = nn.ModuleDict(
            {
                VISION: TransformerTrunk(c.vision_width, c.vision_depth, c.vision_heads, c.mlp_ratio, c.dropout),
                AUDIO: TransformerTrunk(c.audio_width, c.audio_depth, c.audio_heads, c.mlp_ratio, c.dropout),
                TEXT: nn.Identity(),  # the frozen sentence encoder already ran outside the model
            }
        )
        self.modality_heads = nn.ModuleDict(
            {
                VISION: _cls_head(c.vision_width, c.embed_dim),
                AUDIO: _cls_head(c.audio_width, c.embed_dim),
                TEXT: nn.Sequential(nn.LayerNorm(c.text_input_dim), nn.Linear(c.text_input_dim, c.embed_dim, bias=False)),
            }
        )
        self.modality_postprocessors = nn.ModuleDict(
            {
                VISION: Normalize(dim=-1),
                AUDIO: nn.Sequential(
                    Normalize(dim=-1),
                    LearnableLogitScaling(c.audio_logit_scale, learnable=False, max_logit_scale=c.max_logit_scale),
                ),
                TEXT: nn.Sequential(
                    Normalize(dim=-1),
                    LearnableLogitScaling(c.text_logit_scale_init, learnable=True, max_logit_scale=c.max_logit_scale),
                ),
            }
        )

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """{modality: input} → {modality: (B, embed_dim) embedding} for each modality given.

        Inputs: "vision" (B, 1, S, S) in [0, 1]; "audio" (B, T, M) log-mel; "text" (B, 384)
        sentence embeddings. Outputs are unit vectors times the modality's logit scale.
        """
        unknown = sorted(set(inputs) - set(MODALITIES))
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; accepted: {list(MODALITIES)}")
        outputs: dict[str, Tensor] = {}
        for modality, value in inputs.items():
            value = self.modality_preprocessors[modality](value)
            value = self.modality_trunks[modality](value)
            value = self.modality_heads[modality](value)
            outputs[modality] = self.modality_postprocessors[modality](value)
        return outputs

    def logit_scale(self, modality: str) -> float:
        """The factor `modality`'s postprocessor multiplies unit embeddings by (1.0 if none)."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; accepted: {list(MODALITIES)}")
        for module in self.modality_postprocessors[modality].modules():
            if isinstance(module, LearnableLogitScaling):
                return float(module.log_logit_scale.detach().exp().clamp(max=module.max_logit_scale))
        return 1.0

    def tower_modules(self, modality: str) -> list[nn.Module]:
        """The preprocessor, trunk, head and postprocessor of one modality, in forward order."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; accepted: {list(MODALITIES)}")
        parts = (self.modality_preprocessors, self.modality_trunks, self.modality_heads, self.modality_postprocessors)
        return [part[modality] for part in parts]

    def tower_parameters(self, modality: str) -> list[nn.Parameter]:
        """Every parameter that shapes `modality`'s embedding (to freeze or to optimise)."""
        return [p for module in self.tower_modules(modality) for p in module.parameters()]

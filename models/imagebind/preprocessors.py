"""Preprocessors: raw modality tensors → token sequences (`Tokens`) for the trunks.

Attribute names (`rgbt_stem`, `depth_stem`, `imu_stem`, `pos_embedding_helper.pos_embed`,
`token_embedding`, `mask`) are those of Meta's checkpoint, so its weights load by name.
Every preprocessor takes one clip per row; `ImageBind.forward` folds clips into the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.audio_augment import cmvn, cmvn_speech_frames

# The official code turns a still image into a clip of this many repeated frames before its
# 3-D patch embedding, whatever the configured video length.
IMAGE_AS_VIDEO_FRAMES = 2


@dataclass
class Tokens:
    """What a preprocessor hands on: the trunk's input, and how to read its output."""

    values: Tensor  # (B, N, C) tokens; (B, C) for an external tower's embedding
    attn_mask: Tensor | None = None  # (N, N) additive attention mask (causal text)
    pool_index: Tensor | None = None  # (B,) token each row's head reads; None: the CLS token


class ImageToVideo(nn.Module):
    """(B, C, H, W) image → (B, C, T, H, W) clip of `frames` copies; single frames are repeated too."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames = frames

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.shape[2] == 1:
            x = x.repeat(1, 1, self.frames, 1, 1)
        return x


class PatchStem(nn.Module):
    """Patchify with `proj` (a strided convolution), flatten to tokens, optionally LayerNorm."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (B, C, [T,] H, W) → (B, N, C)
        return tokens if self.norm_layer is None else self.norm_layer(tokens)


class LinearStem(nn.Module):
    """(B, N, features) patches already cut → (B, N, width) tokens: linear map, then LayerNorm."""

    def __init__(self, features: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(features, width, bias=False)
        self.norm_layer = nn.LayerNorm(width)

    def forward(self, patches: Tensor) -> Tensor:
        return self.norm_layer(self.proj(patches))


class PositionTable(nn.Module):
    """Learnt position embeddings for a CLS token plus a fixed number of patches."""

    def __init__(self, n_tokens: int, width: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, width))


def _init_cls_and_positions(cls_token: Tensor, pos_embed: Tensor, official: bool, pos_std: float | None) -> None:
    # Demo: truncated normal (0.02), cls first. Official (OpenCLIP style): normal scaled by
    # width^-0.5, or a fixed std where the official code gives one.
    with torch.no_grad():
        if not official:
            nn.init.trunc_normal_(cls_token, std=0.02)
            nn.init.trunc_normal_(pos_embed, std=0.02)
            return
        scale = cls_token.shape[-1] ** -0.5
        nn.init.normal_(pos_embed, std=pos_std if pos_std is not None else scale)
        nn.init.normal_(cls_token, std=scale)


class PatchPreprocessor(nn.Module):
    """(B, C, [T,] H, W) map → (B, 1 + N, width): patches, a CLS token first, plus positions.

    Vision, audio, depth and thermal all use it; `stem_name` is the official attribute name.
    """

    def __init__(
        self,
        modality: str,
        stem_name: str,
        stem: PatchStem,
        input_shape: tuple[int, ...],
        n_patches: int,
        width: int,
        *,
        frame_patches: int | None = None,
        official_init: bool = False,
    ) -> None:
        super().__init__()
        self.modality = modality
        self.input_shape = input_shape  # (C, H, W) of one clip; a video adds T before H
        self.frame_patches = frame_patches  # patches of one frame when positions cover several
        self.stem_name = stem_name
        self.add_module(stem_name, stem)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embedding_helper = PositionTable(1 + n_patches, width)
        _init_cls_and_positions(self.cls_token, self.pos_embedding_helper.pos_embed, official_init, None)

    def check_shape(self, x: Tensor) -> None:
        channels, height, width = self.input_shape
        video_ok = self.frame_patches is not None and x.ndim == 5
        if (x.ndim != 4 and not video_ok) or x.shape[1] != channels or tuple(x.shape[-2:]) != (height, width):
            raise ValueError(
                f"{self.modality} input must be (B, {channels}, {height}, {width}), got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tokens:
        self.check_shape(x)
        tokens = getattr(self, self.stem_name)(x)  # (B, N, C)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)  # (B, 1 + N, C)
        pos: Tensor = self.pos_embedding_helper.pos_embed
        if tokens.shape[1] != pos.shape[1]:
            if self.frame_patches is None or x.ndim != 4 or tokens.shape[1] != 1 + self.frame_patches:
                raise ValueError(
                    f"{self.modality} input {tuple(x.shape)} gives {tokens.shape[1]} tokens, "
                    f"the position table has {pos.shape[1]}"
                )
            pos = pos[:, : tokens.shape[1]]  # a still image takes the first frame's positions, as officially
        return Tokens(tokens + pos)


class AudioPreprocessor(PatchPreprocessor):
    """Log-mel spectrogram → tokens; mel bins are the image's height axis, frames its width.

    Accepts (B, T, M) frames×mels, as `models.transforms` makes it, or the official (B, 1, M, T).
    """

    def __init__(self, mean: float, std: float, cmvn: bool = False, cmvn_speech_only: bool = False,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.mean, self.std, self.cmvn, self.cmvn_speech_only = mean, std, cmvn, cmvn_speech_only

    def forward(self, x: Tensor) -> Tokens:
        _, n_mels, frames = self.input_shape
        if x.ndim == 3:
            if tuple(x.shape[1:]) != (frames, n_mels):
                raise ValueError(
                    f"audio input must be (B, {frames}, {n_mels}) log-mel frames×mels or "
                    f"(B, [clips,] 1, {n_mels}, {frames}), got {tuple(x.shape)}"
                )
            x = x.transpose(1, 2).unsqueeze(1)  # (B, 1, M, T)
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, n_mels, frames):
            raise ValueError(
                f"audio input must be (B, {frames}, {n_mels}) log-mel frames×mels or "
                f"(B, [clips,] 1, {n_mels}, {frames}), got {tuple(x.shape)}"
            )
        if self.cmvn_speech_only:  # per clip and mel bin over its content frames
            return super().forward(cmvn_speech_frames(x, time_dim=-1, mel_dim=-2))
        if self.cmvn:  # per clip and mel bin over its frames: the same in training, evaluation and serving
            return super().forward(cmvn(x, time_dim=-1))
        return super().forward((x - self.mean) / self.std)


class TextTokenPreprocessor(nn.Module):
    """(B, L) token ids → (B, L, width) embeddings plus positions, causal mask, EOT index.

    The head reads the end-of-text token, found as each row's largest id (CLIP's EOT has the
    largest id in the vocabulary).
    """

    mask: Tensor  # (L, L) additive causal mask; a buffer, so it is in the checkpoint as officially

    def __init__(self, vocab_size: int, context_length: int, width: int, *, official_init: bool) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.empty(1, context_length, width))
        # Additive mask: -inf above the diagonal, so a token attends only to itself and earlier ones.
        self.register_buffer("mask", torch.full((context_length, context_length), float("-inf")).triu(1))
        with torch.no_grad():
            nn.init.normal_(self.token_embedding.weight, std=0.02)
            nn.init.normal_(self.pos_embed, std=0.01 if official_init else 0.02)

    def forward(self, ids: Tensor) -> Tokens:
        if ids.ndim != 2 or ids.shape[1] != self.context_length or ids.is_floating_point():
            raise ValueError(
                f"text input must be (B, {self.context_length}) integer token ids, "
                f"got {tuple(ids.shape)} {ids.dtype}"
            )
        tokens = self.token_embedding(ids) + self.pos_embed  # (B, L, C)
        return Tokens(tokens, attn_mask=self.mask, pool_index=ids.argmax(dim=-1))


class EmbeddingInput(nn.Module):
    """(B, dim) embeddings from an external encoder, passed on unchanged after a shape check."""

    def __init__(self, modality: str, dim: int) -> None:
        super().__init__()
        self.modality, self.dim = modality, dim

    def forward(self, x: Tensor) -> Tokens:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{self.modality} input must be (B, {self.dim}) embeddings, got {tuple(x.shape)}")
        return Tokens(x)


class IMUPreprocessor(nn.Module):
    """(B, channels, length) series → (B, 1 + length / patch, width): all channels of
    `patch` consecutive samples form one token."""

    def __init__(self, channels: int, length: int, patch: int, width: int, *, official_init: bool) -> None:
        super().__init__()
        self.channels, self.length, self.patch = channels, length, patch
        self.imu_stem = LinearStem(channels * patch, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + length // patch, width))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        _init_cls_and_positions(self.cls_token, self.pos_embed, official_init, 0.01)

    def forward(self, x: Tensor) -> Tokens:
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.channels, self.length):
            raise ValueError(f"imu input must be (B, {self.channels}, {self.length}), got {tuple(x.shape)}")
        patches = x.unfold(-1, self.patch, self.patch)  # (B, channels, N, patch)
        patches = patches.permute(0, 2, 1, 3).flatten(2)  # (B, N, channels * patch), channel-major
        tokens = self.imu_stem(patches)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return Tokens(torch.cat([cls, tokens], dim=1) + self.pos_embed)

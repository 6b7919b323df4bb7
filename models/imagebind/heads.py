"""Heads (trunk tokens → one vector) and postprocessors (→ unit vector times a logit scale).

Module indices inside the heads (`0` LayerNorm, `2` or `3` projection, `proj.0/1` for text)
follow Meta's checkpoint so its weights load by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SelectElement(nn.Module):
    """Pick one token (the CLS token at index 0): (B, N, C) → (B, C). Meta's name."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.index]


class CLSHead(nn.Sequential):
    """LayerNorm → CLS token → [dropout] → linear projection: (B, N, C) → (B, D)."""

    def __init__(self, width: int, embed_dim: int, norm_eps: float, dropout: float | None = None) -> None:
        layers: list[nn.Module] = [nn.LayerNorm(width, eps=norm_eps), SelectElement(0)]
        if dropout is not None:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, embed_dim, bias=False))
        super().__init__(*layers)

    def forward(self, tokens: Tensor, pool_index: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return super().forward(tokens)


class EOTHead(nn.Module):
    """The end-of-text token of each row → LayerNorm → projection: (B, L, C) → (B, D)."""

    def __init__(self, width: int, embed_dim: int, norm_eps: float) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(width, eps=norm_eps), nn.Linear(width, embed_dim, bias=False))

    def forward(self, tokens: Tensor, pool_index: Tensor | None = None) -> Tensor:
        if pool_index is None:
            raise ValueError("the text head needs the end-of-text position of each row")
        return self.proj(tokens[torch.arange(tokens.shape[0], device=tokens.device), pool_index])


class EmbeddingHead(nn.Sequential):
    """LayerNorm → projection of an external encoder's (B, C) embedding to (B, D)."""

    def __init__(self, width: int, embed_dim: int, norm_eps: float) -> None:
        super().__init__(nn.LayerNorm(width, eps=norm_eps), nn.Linear(width, embed_dim, bias=False))

    def forward(self, x: Tensor, pool_index: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return super().forward(x)


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
        log_scale = torch.tensor(math.log(logit_scale_init), dtype=torch.float32)  # a scalar, as officially
        if learnable:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)

    def scale(self) -> Tensor:
        return torch.clamp(self.log_logit_scale.exp(), max=self.max_logit_scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale() * x


def scaled_unit(logit_scale: float | None, learnable: bool, max_logit_scale: float) -> nn.Module:
    """The postprocessor: L2-normalise, then multiply by a logit scale if one is given."""
    if logit_scale is None:
        return Normalize(dim=-1)
    return nn.Sequential(Normalize(dim=-1), LearnableLogitScaling(logit_scale, learnable, max_logit_scale))

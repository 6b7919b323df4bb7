"""The trunk: a pre-LayerNorm transformer over tokens, with the official checkpoint's names.

Block layout (`attn`, `norm_1`, `mlp.fc1`, `mlp.fc2`, `norm_2`, an optional
`pre_transformer_layer` LayerNorm) matches Meta's `SimpleTransformer`, so official weights
load by name. Attention is torch's `nn.MultiheadAttention`, as in the official code.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn


class DropPath(nn.Module):
    """Stochastic depth: in training, drop a sample's whole residual branch with probability p."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep  # rescaled so the expected branch output is unchanged


class Mlp(nn.Module):
    """Feed-forward: Linear → GELU → Linear, with dropout after each activation."""

    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """x + attn(norm_1(x)), then x + mlp(norm_2(x)); (B, N, C) → (B, N, C)."""

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: float,
        *,
        bias_kv: bool,
        drop_path: float,
        dropout: float,
        norm_eps: float,
    ) -> None:
        super().__init__()
        # Creation order (attention, then the two MLP linears) is nn.TransformerEncoderLayer's,
        # so the demo config draws the same initial weights as when it used that layer.
        self.attn = nn.MultiheadAttention(
            width, heads, dropout=dropout, bias=True, add_bias_kv=bias_kv, batch_first=True
        )
        self.mlp = Mlp(width, int(width * mlp_ratio), dropout)
        self.norm_1 = nn.LayerNorm(width, eps=norm_eps)
        self.norm_2 = nn.LayerNorm(width, eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        h = self.norm_1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0])
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class Transformer(nn.Module):
    """Optional LayerNorm, then `depth` blocks: (B, N, C) tokens → (B, N, C)."""

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        *,
        pre_norm: bool,
        bias_kv: bool,
        drop_path: float,
        dropout: float,
        norm_eps: float,
        official_init: bool,
    ) -> None:
        super().__init__()
        # A one-entry Sequential, so the weight is `pre_transformer_layer.0.weight` as officially.
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(width, eps=norm_eps)) if pre_norm else nn.Identity()
        # Stochastic depth grows linearly from 0 at the first block (plain floats: works on meta).
        rates = [drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]

        def block(rate: float) -> Block:
            return Block(width, heads, mlp_ratio, bias_kv=bias_kv, drop_path=rate, dropout=dropout, norm_eps=norm_eps)

        if official_init:
            self.blocks = nn.Sequential(*[block(rate) for rate in rates])
            self.apply(_official_linear_init)
        else:
            # The demo was tuned with nn.TransformerEncoder, whose blocks all start as copies of
            # one block; kept so its trained numbers do not move.
            template = block(0.0)
            blocks = [copy.deepcopy(template) for _ in rates]
            for b, rate in zip(blocks, rates):
                b.drop_path = DropPath(rate) if rate > 0 else nn.Identity()
            self.blocks = nn.Sequential(*blocks)

    def forward(self, tokens: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        tokens = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            tokens = block(tokens, attn_mask)
        return tokens


class PassThroughTrunk(nn.Module):
    """The trunk of an external tower: its encoder already ran outside the model."""

    def forward(self, tokens: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        return tokens


def _official_linear_init(module: nn.Module) -> None:
    # Meta's trunks: xavier-uniform linear weights (the MAE / JAX ViT choice), zero biases.
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)

"""Read demo checkpoints saved before the package split (`models/imagebind.py`).

Those used `nn.TransformerEncoder` names and a one-element logit scale; the weights are the
same numbers under other names, so registered champions keep loading strictly.
"""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor

# (pattern, replacement) applied in order to each key of an old checkpoint.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"\.tokenizer\.stem_norm\.", ".rgbt_stem.norm_layer."),
    (r"\.tokenizer\.stem\.", ".rgbt_stem.proj."),
    (r"\.tokenizer\.pos_embed$", ".pos_embedding_helper.pos_embed"),
    (r"\.tokenizer\.cls_token$", ".cls_token"),
    (r"\.blocks\.layers\.(\d+)\.self_attn\.", r".blocks.\1.attn."),
    (r"\.blocks\.layers\.(\d+)\.linear1\.", r".blocks.\1.mlp.fc1."),
    (r"\.blocks\.layers\.(\d+)\.linear2\.", r".blocks.\1.mlp.fc2."),
    (r"\.blocks\.layers\.(\d+)\.norm1\.", r".blocks.\1.norm_1."),
    (r"\.blocks\.layers\.(\d+)\.norm2\.", r".blocks.\1.norm_2."),
)


def upgrade_legacy_keys(state_dict: dict[str, Any], prefix: str = "") -> None:
    """Rename, in place, the keys under `prefix` of a pre-split demo checkpoint; others are untouched."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        new = key
        for pattern, replacement in _RENAMES:
            new = re.sub(pattern, replacement, new)
        value = state_dict.pop(key)
        if new.endswith("log_logit_scale") and isinstance(value, Tensor) and value.shape == (1,):
            value = value.reshape(())  # was a one-element vector, now a scalar as officially
        state_dict[new] = value

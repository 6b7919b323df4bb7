"""LoRA through peft: low-rank adapters on frozen pretrained towers, merged away for serving.

Two towers take adapters (Hu et al., 2021; peft does the layers: frozen base, `B` starts at
zero, scaling = alpha / r):
- the MiniLM text encoder (BERT attention `query` / `value` linears, peft's default for BERT);
- ImageBind trunks, whose attention is `torch.nn.MultiheadAttention` (packed q/k/v weights,
  no per-projection linears). peft 0.21 adapts such a module as a whole: one rank-r update on
  the packed in-projection (q, k and v together) and one on `out_proj`. It cannot adapt q and v
  alone, and an adapter on `attn.out_proj` by itself would never run (MHA does not call that
  linear's forward), so that target is refused.

`merge_lora` folds the adapters into the base weights: the result is the base model class with
the base module structure (and state_dict keys), so it serves at the base's latency.

The `lora` family model is `CaptionClassifier` (mean-pooled MiniLM tokens, linear head:
caption → one of the task's classes) with adapters, trained by `train_classifier`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch import Tensor, nn

from models.imagebind import ImageBind
from models.imagebind.transformer import Transformer
from models.text import load_text_encoder

MINILM, IMAGEBIND = "minilm", "imagebind"
# The attention projections each tower's adapters go on when LoraSettings.target_modules is None.
ATTENTION_TARGETS: dict[str, tuple[str, ...]] = {
    MINILM: ("query", "value"),  # W_q and W_v, as in the LoRA paper and peft's BERT default
    IMAGEBIND: ("attn",),  # the whole nn.MultiheadAttention: packed q/k/v and out_proj
}
MAX_CAPTION_TOKENS = 64  # a caption is a sentence or two; longer text is truncated


@dataclass(frozen=True)
class LoraSettings:
    """What to adapt and how; validated on construction so bad config stops at start-up."""

    r: int  # rank of the update B @ A (params.yaml's train.lora / train.imagebind_lora, as all three)
    alpha: float  # update scaled by alpha / r, so changing r keeps the step size
    dropout: float  # dropout on the adapter's input (the base path is untouched)
    target_modules: tuple[str, ...] | None = None  # module names; None: the tower's ATTENTION_TARGETS
    train_heads: bool = True  # also train the heads on top (classifier head, ImageBind heads)

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoRA r={self.r!r}: expected an integer rank >= 1 (typically 4..64)")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not (
            math.isfinite(self.alpha) and self.alpha > 0
        ):
            raise ValueError(f"LoRA alpha={self.alpha!r}: expected a finite number > 0 (often 2 * r)")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout={self.dropout!r}: expected a probability in [0, 1)")
        if not isinstance(self.train_heads, bool):
            raise ValueError(f"LoRA train_heads={self.train_heads!r}: expected True or False")
        targets = self.target_modules
        if targets is None:
            return
        if isinstance(targets, str):
            # peft reads a bare string as one regular expression over full module names.
            raise ValueError(
                f"LoRA target_modules={targets!r}: expected a tuple of module names such as ('query', 'value'), not a string"
            )
        if not isinstance(targets, tuple) or not targets or not all(isinstance(t, str) and t.strip() for t in targets):
            raise ValueError(
                f"LoRA target_modules={targets!r}: expected a non-empty tuple of module names, "
                f"e.g. {ATTENTION_TARGETS[MINILM]} (MiniLM) or {ATTENTION_TARGETS[IMAGEBIND]} (ImageBind trunks)"
            )

    def targets_for(self, tower: str) -> tuple[str, ...]:
        """The module names adapted in `tower` ("minilm" or "imagebind")."""
        if tower not in ATTENTION_TARGETS:
            raise ValueError(f"unknown tower {tower!r}; expected one of {sorted(ATTENTION_TARGETS)}")
        return self.target_modules if self.target_modules is not None else ATTENTION_TARGETS[tower]

    def peft_config(self, target_modules: str | list[str], modules_to_save: list[str]) -> LoraConfig:
        """peft's LoraConfig for these settings; heads are saved (trained) only if train_heads."""
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=target_modules,
            modules_to_save=modules_to_save if self.train_heads and modules_to_save else None,
            bias="none",
        )


# --- the `lora` family model: caption → class ----------------------------------------------------


class CaptionClassifier(nn.Module):
    """MiniLM tokens, mean-pooled as all-MiniLM-L6-v2 pools them, then a linear head."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes={num_classes!r}: expected an integer >= 2 (the task's number of classes)")
        self.encoder = encoder  # a transformers BertModel
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) token ids and mask → (B, num_classes) logits."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1): padding does not count
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, H)
        return self.head(pooled)  # (B, num_classes)


def build_caption_classifier(seed: int, num_classes: int) -> CaptionClassifier:
    """A fresh classifier over a private copy of the packaged MiniLM (the shared one stays frozen), with a
    head of `num_classes` outputs (the task's classes, in order)."""
    encoder = copy.deepcopy(load_text_encoder()[0].auto_model)  # peft edits the model it wraps
    torch.manual_seed(seed)  # the head's initial weights
    return CaptionClassifier(encoder, num_classes)


def build_lora_classifier(settings: LoraSettings, num_classes: int, seed: int) -> PeftModel:
    """The `lora` family model: a fresh CaptionClassifier with adapters; one seed fixes head and A."""
    return add_text_lora(build_caption_classifier(seed, num_classes), settings)  # A's init continues seed's stream


def tokenize_captions(captions: Sequence[str]) -> dict[str, Tensor]:
    """Captions → {"input_ids", "attention_mask"}: (N, T) tensors padded to the longest caption."""
    if isinstance(captions, str):
        raise TypeError("tokenize_captions takes a list of captions, not a single string")
    batch = load_text_encoder().tokenizer(
        list(captions), padding=True, truncation=True, max_length=MAX_CAPTION_TOKENS, return_tensors="pt"
    )
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


# --- adapters ---------------------------------------------------------------------------------------


def add_text_lora(model: nn.Module, settings: LoraSettings, heads: Sequence[str] = ("head",)) -> PeftModel:
    """Wrap `model` (a CaptionClassifier, or a bare MiniLM with heads=()) with LoRA, in place.

    Everything is frozen except the adapters and, when settings.train_heads, the named heads.
    """
    targets = list(settings.targets_for(MINILM))
    names = [name for name, _ in model.named_modules()]
    for target in targets:
        if not any(_suffix_matches(name, target) for name in names):
            raise ValueError(f"LoRA target {target!r} matches no module of the text encoder; {_candidates(model)}")
    for head in heads:
        if head not in names:
            raise ValueError(f"head {head!r} is not a module of {type(model).__name__}; top-level modules: "
                             f"{sorted(n for n in names if n and '.' not in n)}")
    return get_peft_model(model, settings.peft_config(targets, list(heads)))


def add_imagebind_lora(
    model: ImageBind, settings: LoraSettings, modalities: Iterable[str] | None = None
) -> PeftModel:
    """Wrap an ImageBind with LoRA on the trunks of `modalities` (default: every native trunk), in place.

    Only those trunks get adapters; their heads train too when settings.train_heads.
    """
    native = [m for m in model.config.modalities if isinstance(model.modality_trunks[m], Transformer)]
    chosen = list(native if modalities is None else modalities)
    bad = [m for m in chosen if m not in native]
    if bad or not chosen:
        raise ValueError(f"LoRA modalities {chosen}: expected a non-empty subset of this model's native "
                         f"transformer trunks {native} (external towers have no trunk to adapt)")
    targets = settings.targets_for(IMAGEBIND)
    for target in targets:
        if target.split(".")[-1] == "out_proj":
            raise ValueError(f"LoRA target {target!r}: nn.MultiheadAttention never calls out_proj's forward, so an "
                             "adapter there would be ignored; target 'attn' (adapts q/k/v and out_proj together)")
    block_prefix = rf"modality_trunks\.(?:{'|'.join(map(re.escape, chosen))})\.blocks\.\d+\."
    pattern = block_prefix + rf"(?:{'|'.join(map(re.escape, targets))})"
    names = [name for name, _ in model.named_modules()]
    for target in targets:
        if not any(re.fullmatch(block_prefix + re.escape(target), name) for name in names):
            raise ValueError(f"LoRA target {target!r} matches no module of the {chosen} trunk blocks; "
                             f"block modules are {_block_module_names(model, chosen[0])}")
    heads = [f"modality_heads.{m}" for m in chosen]
    return get_peft_model(model, settings.peft_config(pattern, heads))


def merge_lora(model: PeftModel) -> nn.Module:
    """Fold the adapters into the base weights: the plain base class, ready to serve (eval mode)."""
    merged = model.merge_and_unload()
    merged.requires_grad_(False)
    return merged.eval()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; total includes adapter weights, as peft reports it."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _suffix_matches(name: str, target: str) -> bool:
    # peft's rule for a list of targets: the full name, or its tail after a dot.
    return name == target or name.endswith("." + target)


def _candidates(model: nn.Module) -> str:
    leaves = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
    return f"its linear layers are named {leaves}"


def _block_module_names(model: ImageBind, modality: str) -> list[str]:
    block = model.modality_trunks[modality].blocks[0]
    return sorted(name for name, _ in block.named_modules() if name)


# --- training the `lora` family model ------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierTraining:
    """A short fine-tune: fixed seed, AdamW over whatever requires grad; params.yaml's train.lora and
    train.seed (defaults and reasons: flows/settings.py)."""

    steps: int  # optimiser steps
    batch_size: int  # captions per step
    lr: float  # AdamW; adapters and a fresh head want more than full fine-tuning's ~1e-4
    weight_decay: float  # AdamW decoupled decay
    seed: int  # batch order and adapter dropout

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: expected an integer >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r}: expected a learning rate > 0")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay!r}: expected >= 0")


def batch_order(rows: int, training: ClassifierTraining) -> list[Tensor]:
    """Row indices of each step: reshuffled epochs from a seeded generator."""
    generator = torch.Generator().manual_seed(training.seed)
    order: list[Tensor] = []
    while len(order) < training.steps:
        perm = torch.randperm(rows, generator=generator)
        order.extend(perm[i : i + training.batch_size] for i in range(0, rows, training.batch_size))
    return order[: training.steps]


def train_classifier(
    model: nn.Module,
    inputs: dict[str, Tensor],
    labels: Tensor,
    training: ClassifierTraining,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Cross-entropy fine-tune of the parameters that require grad; returns the loss of each step.

    `on_step(step)`, if given, is called after each optimiser step (timing, memory sampling).
    """
    if len(labels) != len(inputs["input_ids"]):
        raise ValueError(f"{len(labels)} labels for {len(inputs['input_ids'])} captions")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("no parameter requires grad: nothing to train")
    torch.manual_seed(training.seed)  # dropout masks
    optimizer = torch.optim.AdamW(trainable, lr=training.lr, weight_decay=training.weight_decay)
    model.train()
    losses = []
    for step, rows in enumerate(batch_order(len(labels), training)):
        logits = model(**{k: v[rows] for k, v in inputs.items()})
        loss = F.cross_entropy(logits, labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step)
    return losses


@torch.no_grad()
def predict_classes(model: nn.Module, inputs: dict[str, Tensor], batch_size: int = 128) -> Tensor:
    """(N,) predicted class of each caption, in eval mode."""
    model.eval()
    rows = len(inputs["input_ids"])
    parts = [
        model(**{k: v[i : i + batch_size] for k, v in inputs.items()}).argmax(dim=-1) for i in range(0, rows, batch_size)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

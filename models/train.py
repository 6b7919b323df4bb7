"""ImageBind training: bind text to images, then each other modality to the frozen images.

Stage 1 aligns the vision tower and the text head with symmetric InfoNCE on (image, text). Then
one stage per other modality the data carries (audio, depth, thermal, imu, in that order) freezes
the vision tower and trains only that modality's tower on (modality, image). No loss ever sees an
(audio, text) pair: audio↔text alignment must *emerge* through the images, which is the claim of
Girdhar et al. (CVPR 2023) that the evaluation then measures. Data of images and text alone
trains stage 1 only.

The loop is resumable and data parallel. The batch order and the augmentation draws of an
epoch depend only on (seed, stage, epoch), so a run resumed from its last checkpoint, or
split over several torchrun processes, sees exactly the batches of an uninterrupted
single-process run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import KW_ONLY, asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.audio_augment import AudioAugment
from models.checkpoints import (
    capture_rng_state,
    check_resumable,
    load_checkpoint,
    restore_rng_state,
    run_fingerprint,
    save_checkpoint,
    state_digest,
)
from models.distributed import DataParallel, resolve_device, trainable_only
from models.imagebind import AUDIO, BOUND_MODALITIES, DEPTH, IMU, TEXT, THERMAL, VISION, ImageBind, ImageBindConfig
from models.losses import UNKNOWN_LABEL, pair_loss

if TYPE_CHECKING:
    from models.lora import LoraSettings

STAGE_IMAGE_TEXT = "image_text"  # stage 1 name in history and callbacks
STAGE_AUDIO_IMAGE = "audio_image"  # the audio stage's name in history and callbacks (binding_stage_plan)
STAGE_AUDIO_TEXT = "audio_text"  # the audio stage of the text-paired baseline (TrainConfig.audio_anchor="text")
AUDIO_ANCHORS = (VISION, TEXT)  # what the audio stage pulls audio onto

EpochCallback = Callable[[str, int, dict[str, float]], None]
StepLossCallback = Callable[[str, int, list[float]], None]  # (stage, epoch, loss of each step of it)
Augment = Callable[[Tensor, torch.Generator], Tensor]  # (global batch, this epoch's generator) → batch
# Settings a checkpoint may be resumed under although they differ: they change where and how
# fast the run goes, not the recipe (another device changes float rounding, so resume there is
# close to, not bit-equal with, an uninterrupted run).
RESUMABLE_ACROSS = ("checkpoint_dir", "num_threads", "device")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the temperature init lives in `ImageBindConfig` with the weights. The fields
    without a default are params.yaml's `train:` (defaults and reasons: flows/settings.py, declared once)."""

    seed: int  # seeds the initialisation and, with (stage, epoch), each epoch's order and jitter
    batch_size: int  # pairs per step; also the number of negatives each positive sees
    epochs_stage1: int  # passes over (image, text) pairs
    epochs_stage2: int  # passes over (modality, image) pairs with vision frozen, in each binding stage
    lr: float  # AdamW peak learning rate after warm-up, then cosine decay
    weight_decay: float  # AdamW decay on matrices only (not norms, biases, tokens, scales)
    label_aware: bool  # known shared labels count as extra positives (few classes: many per batch)
    grad_clip: float | None  # max global gradient norm per step; None: off
    audio_augment: AudioAugment  # speech augmentation of the audio stage's batches (its `enabled` off: none)
    min_lr_ratio: float = 0.05  # final learning rate as a fraction of the peak
    warmup_fraction: float = 0.05  # share of each stage's steps spent warming up linearly
    image_shift: int = 1  # stage-1 augmentation: random translation of up to this many pixels
    # Intra-op CPU threads while training (restored after). The matrices are tiny, so one thread
    # is fastest; with two, OpenMP stalls ~10× whenever another process holds a core. None: leave.
    num_threads: int | None = 1
    device: str = "auto"  # "cpu", "cuda", "cuda:1", …; auto: the current CUDA device when there is one
    bf16: bool = True  # bf16 autocast of the forward pass on CUDA; the CPU always trains in float32
    checkpoint_dir: str | None = None  # folder for a checkpoint each epoch, resumed from if present; None: off
    # The audio stage's partner: "vision" is ImageBind (audio↔text emerges); "text" trains audio on
    # (audio, caption) pairs directly, the paired baseline of benchmarks/emergent_alignment.py.
    audio_anchor: str = VISION

    def __post_init__(self) -> None:
        if isinstance(self.audio_augment, dict):  # read back from JSON (torchrun's --train-config, asdict)
            object.__setattr__(self, "audio_augment", AudioAugment(**self.audio_augment))
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be ≥ 2 for a contrastive loss, got {self.batch_size}")
        if self.epochs_stage1 < 0 or self.epochs_stage2 < 0:
            raise ValueError(f"epochs must be ≥ 0, got {self.epochs_stage1} and {self.epochs_stage2}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.image_shift < 0:
            raise ValueError(f"image_shift must be ≥ 0 pixels, got {self.image_shift}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be ≥ 1 or None, got {self.num_threads}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None (no clipping), got {self.grad_clip}")
        if self.audio_anchor not in AUDIO_ANCHORS:
            raise ValueError(f"audio_anchor must be one of {AUDIO_ANCHORS}, got {self.audio_anchor!r}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as error:
                raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}") from error


# Per bound modality: its TrainingData field and the shape of one row for a model config.
_ROW_SHAPES: dict[str, Callable[[ImageBindConfig], tuple[int, ...]]] = {
    AUDIO: lambda c: (c.audio_frames, c.audio_n_mels),
    DEPTH: lambda c: (1, c.depth_image_size, c.depth_image_size),
    THERMAL: lambda c: (1, c.thermal_image_size, c.thermal_image_size),
    IMU: lambda c: (c.imu_channels, c.imu_length),
}


@dataclass
class TrainingData:
    """Row i is one example: an image, its caption and, when the data has them, its clip, depth map,
    thermal map or IMU series. Every row carries every modality given; None: the data has none."""

    image: np.ndarray  # (N, C, S, S) float32: C = 1 (grayscale) or 3 (RGB, and official weights)
    # (N, 384) float32 frozen-encoder caption embeddings (external text tower), or (N, context)
    # integer token ids when the model's text tower is native (`text_input_dim=None`, official)
    text_emb: np.ndarray
    label: np.ndarray  # (N,) int64 class index, -1 where unknown
    _: KW_ONLY
    audio: np.ndarray | None = None  # (N, T, M) float32 log-mel
    depth: np.ndarray | None = None  # (N, 1, Sd, Sd) float32 maps
    thermal: np.ndarray | None = None  # (N, 1, St, St) float32 maps
    imu: np.ndarray | None = None  # (N, 6, L) float32 series

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def bound(self) -> dict[str, np.ndarray]:
        """The modalities given besides image and text, each bound to the images in its own stage, in order."""
        return {m: getattr(self, m) for m in BOUND_MODALITIES if getattr(self, m) is not None}

    def validate(self, config: ImageBindConfig | None = None) -> None:
        """Raise ValueError naming the bad array when shapes or lengths do not fit (together, or `config`)."""
        n = len(self.label)
        if self.label.ndim != 1:
            raise ValueError(f"label must be 1-D (N,), got shape {self.label.shape}")
        if not np.issubdtype(self.label.dtype, np.integer):
            raise ValueError(f"label must be integer (use {UNKNOWN_LABEL} for unknown), got dtype {self.label.dtype}")
        if n and self.label.min() < UNKNOWN_LABEL:
            raise ValueError(f"labels must be ≥ {UNKNOWN_LABEL}, found {int(self.label.min())}")
        expected_ndim = {"image": 4, "text_emb": 2, AUDIO: 3, DEPTH: 4, THERMAL: 4, IMU: 3}
        for name, ndim in expected_ndim.items():
            array = getattr(self, name)
            if array is not None and (array.ndim != ndim or array.shape[0] != n):
                raise ValueError(f"{name} must be {ndim}-D with {n} rows (one per label), got shape {array.shape}")
        if config is None:
            return
        missing = [m for m in self.bound() if m not in config.modalities]
        if missing:
            raise ValueError(f"the training data has {missing} but the model config's modalities are "
                             f"{list(config.modalities)}; build it with config_modalities(<the data's modalities>)")
        native_text = config.text_input_dim is None
        wanted = {
            "image": (config.image_channels, config.image_size, config.image_size),
            "text_emb": (config.text_context_length,) if native_text else (config.text_input_dim,),
            **{m: _ROW_SHAPES[m](config) for m in self.bound()},
        }
        if native_text and not np.issubdtype(self.text_emb.dtype, np.integer):
            raise ValueError(f"text_emb must hold integer token ids for a native text tower, got dtype {self.text_emb.dtype}")
        for name, shape in wanted.items():
            got = getattr(self, name).shape[1:]
            if got != shape:
                raise ValueError(f"{name} rows must have shape {shape} for this model config, got {got}")


def training_data_from_inputs(inputs: Any, text_emb: np.ndarray, label: np.ndarray) -> TrainingData:
    """A window's `models.inputs.ModelInputs` as training data: the image, the caption embeddings, the
    labels, and each other modality some row carries (the caller keeps only rows that carry all of them)."""
    from models.inputs import modalities_present

    present = modalities_present(inputs)
    return TrainingData(image=inputs.image, text_emb=text_emb, label=label,
                        **{m: getattr(inputs, m) for m in BOUND_MODALITIES if m in present})


@dataclass
class TrainResult:
    """The trained model (eval mode, vision tower left frozen), its per-epoch history and wall time."""

    model: ImageBind
    history: list[dict[str, float | int | str]] = field(default_factory=list)  # {stage, epoch, loss, ...}
    seconds: float = 0.0  # wall-clock time of every stage


def random_shift(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each (C, S, S) image by up to `max_shift` pixels, zero (background) filled.

    A ViT on ~1,400 tiny 16×16 images memorises them (measured on the bundled example project: 99.8 % train,
    93 % held-out zero-shot without it; 98 % held-out with one pixel); jitter is the cheapest
    regulariser that keeps the content intact.
    """
    if max_shift == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)  # (B, C, S + 2k, S + 2k)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator)  # (B, 2): dy, dx
    rows = (offsets[:, 0, None] + torch.arange(h))[:, :, None]  # (B, S, 1)
    cols = (offsets[:, 1, None] + torch.arange(w))[:, None, :]  # (B, 1, S)
    batch = torch.arange(b)[:, None, None]  # (B, 1, 1)
    picked = padded[batch, :, rows, cols]  # (B, S, S, C): the advanced indices' dims come first
    return picked.permute(0, 3, 1, 2).contiguous()  # (B, C, S, S)


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for a block and restore it (process-wide while inside)."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def lr_at(step: int, total_steps: int, peak: float, warmup_fraction: float, min_lr_ratio: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to `peak * min_lr_ratio` (nanoGPT's schedule)."""
    warmup = max(1, int(total_steps * warmup_fraction))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    floor = peak * min_lr_ratio
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def iterate_batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches covering 0..n-1; a trailing batch of one is dropped (no negatives)."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        if len(batch) >= 2:
            yield batch


def epoch_generators(seed: int, stage_index: int, epoch: int) -> tuple[np.random.Generator, torch.Generator]:
    """(batch-order RNG, augmentation RNG) of one epoch, a function of (seed, stage, epoch) alone.

    Nothing carries over from earlier epochs, so a resumed or sharded run draws the same batches.
    """
    order_seed, augment_seed = np.random.SeedSequence([seed, stage_index, epoch]).generate_state(2)
    return np.random.default_rng(order_seed), torch.Generator().manual_seed(int(augment_seed))


def build_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW that decays only matrices (≥ 2-D), the usual transformer recipe."""
    trainable = [p for p in params if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """`lr_at` as a torch scheduler (a multiplier of the peak), so its position is checkpointed."""
    factor = partial(lr_at, total_steps=total_steps, peak=1.0, warmup_fraction=config.warmup_fraction,
                     min_lr_ratio=config.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def freeze(modules: list[nn.Module]) -> None:
    """Stop gradients and fix norm/dropout behaviour, so a frozen tower is truly constant."""
    for module in modules:
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)


@torch.no_grad()
def embed_frozen(model: ImageBind, modality: str, values: Tensor, device: torch.device, batch_size: int = 512) -> Tensor:
    """(N, ...) → (N, D) embeddings of a frozen tower, computed once instead of every step."""
    chunks = [model({modality: values[i : i + batch_size].to(device)})[modality] for i in range(0, len(values), batch_size)]
    return torch.cat(chunks)


@dataclass
class _Loop:
    """The state one training call shares across its stages."""

    model: ImageBind
    config: TrainConfig
    device: torch.device
    parallel: DataParallel
    tensors: dict[str, Tensor]  # full training set on the CPU, one tensor per modality
    labels: Tensor | None  # (N,) for label-aware targets, None for plain InfoNCE
    augment: dict[str, Augment]  # per-modality batch transform, applied to trained towers only
    history: list[dict[str, float | int | str]]
    fingerprint: dict[str, Any]
    on_epoch: EpochCallback | None
    on_step_losses: StepLossCallback | None = None
    # With LoRA: the parameters peft left trainable (adapters, and heads when asked); a stage
    # optimises the trained towers' share of them only. None: whole towers train.
    adapted: set[int] | None = None

    def run_stage(self, index: int, stage: str, pair: tuple[str, str], trained: tuple[str, ...], epochs: int,
                  resume: dict[str, Any] | None = None) -> None:
        """Train the towers in `trained` on symmetric InfoNCE between the two modalities of `pair`.

        `resume` is a checkpoint taken inside this stage: optimiser and schedule continue from it.
        """
        start = 0 if resume is None else int(resume["epoch"]) + 1
        if start >= epochs:
            return
        params = [p for modality in trained for p in self.model.tower_parameters(modality)
                  if self.adapted is None or id(p) in self.adapted]
        if not params:
            raise ValueError(f"stage {stage}: nothing to train in towers {list(trained)} (LoRA adapts only native "
                             "transformer trunks; set train_heads to train the heads of the others)")
        # A frozen tower (eval mode, no grad) embeds a row identically every epoch: embed it once.
        cached = {m: embed_frozen(self.model, m, self.tensors[m], self.device) for m in pair if m not in trained}
        if TEXT in cached:  # a unit anchor, as vision is: audio's fixed scale stays the only temperature
            cached[TEXT] = F.normalize(cached[TEXT], dim=-1)
        n = self.tensors[pair[0]].shape[0]
        steps_per_epoch = n // self.config.batch_size + (1 if n % self.config.batch_size >= 2 else 0)
        optimizer = build_optimizer(params, self.config)
        scheduler = build_scheduler(optimizer, max(1, steps_per_epoch * epochs), self.config)
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
        with trainable_only(self.model, params):
            forward = self.parallel.wrap(self.model, self.device)
            for epoch in range(start, epochs):
                metrics, step_losses = self._epoch(forward, optimizer, scheduler, params, pair, cached, index, epoch)
                if stage == STAGE_IMAGE_TEXT:
                    metrics["text_logit_scale"] = self.model.logit_scale(TEXT)
                self.history.append({"stage": stage, "epoch": epoch, **metrics})
                if self.parallel.is_main:  # one writer, one logger, whatever the number of processes
                    if self.config.checkpoint_dir is not None:
                        save_checkpoint(self.config.checkpoint_dir, {
                            "stage": stage, "epoch": epoch, "model": self.model.state_dict(),
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "rng": capture_rng_state(), "history": self.history, "fingerprint": self.fingerprint,
                        })
                    if self.on_step_losses is not None:
                        self.on_step_losses(stage, epoch, step_losses)
                    if self.on_epoch is not None:
                        self.on_epoch(stage, epoch, metrics)

    def _epoch(self, forward: nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               params: list[nn.Parameter], pair: tuple[str, str], cached: dict[str, Tensor], index: int,
               epoch: int) -> tuple[dict[str, float], list[float]]:
        """One pass over the data: the epoch's mean loss (and mean pre-clip gradient norm), and each step's loss."""
        order_rng, augment_rng = epoch_generators(self.config.seed, index, epoch)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                    if self.config.bf16 and self.device.type == "cuda" else nullcontext())
        losses: list[Tensor] = []
        norms: list[Tensor] = []
        for batch in iterate_batches(len(self.tensors[pair[0]]), self.config.batch_size, order_rng):
            idx = torch.from_numpy(batch)
            mine = self.parallel.local_rows(len(batch))
            inputs = {}
            for m in pair:
                if m not in cached:
                    values = self.tensors[m][idx]  # the global batch: every process draws the same jitter
                    if m in self.augment:
                        values = self.augment[m](values, augment_rng)
                    inputs[m] = values[mine].to(self.device, non_blocking=True)
            with autocast:
                out = forward(inputs)  # each (B_local, D)
            emb = {m: cached[m][idx.to(self.device)] if m in cached
                   else self.parallel.gather_rows(out[m].float(), len(batch)) for m in pair}  # each (B, D)
            labels = None if self.labels is None else self.labels[idx].to(self.device)
            loss = pair_loss(emb[pair[0]], emb[pair[1]], labels)
            optimizer.zero_grad(set_to_none=True)
            self.parallel.scale_loss(loss).backward()
            if self.config.grad_clip is not None:
                norms.append(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach())
        stacked = torch.stack(losses)
        step_losses = stacked.tolist()  # one device sync per epoch, not per step
        metrics = {"loss": stacked.mean().item()}
        if norms:
            metrics["grad_norm"] = torch.stack(norms).mean().item()
        return metrics, step_losses


def binding_stage_plan(modality: str, config: TrainConfig) -> tuple[str, tuple[str, str], tuple[str, ...], int]:
    """(stage name, the two modalities paired, towers trained, epochs) of the stage binding `modality`:
    `{modality}_image` on (modality, image), the modality's tower alone. Audio never meets text,
    unless the paired baseline asks for it (`audio_anchor="text"`: stage `audio_text`)."""
    if modality == AUDIO and config.audio_anchor == TEXT:
        return STAGE_AUDIO_TEXT, (AUDIO, TEXT), (AUDIO,), config.epochs_stage2
    return f"{modality}_image", (modality, VISION), (modality,), config.epochs_stage2


def train_imagebind(
    data: TrainingData,
    model_config: ImageBindConfig,
    train_config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    on_step_losses: StepLossCallback | None = None,
    init_weights: dict[str, Tensor] | None = None,
    lora: LoraSettings | None = None,
) -> TrainResult:
    """Build a model from `model_config` and train it in ImageBind's two stages.

    Stage 1: vision + text head on (image, text). Then, for each of audio, depth, thermal, imu
    that `data` carries: vision frozen (no grad, eval mode), that tower alone on (it, image); the
    model config must hold those modalities (`config_modalities`). `on_epoch(stage, epoch, metrics)` is called
    after every epoch (after its checkpoint), e.g. to log to a tracker; `on_step_losses(stage,
    epoch, losses)` just before it, with the loss of each optimiser step of that epoch. With a
    `checkpoint_dir` that already holds a checkpoint of this run, training resumes after
    its epoch. Under torchrun (an initialised process group) each process trains on its
    share of every batch; only rank 0 writes checkpoints and calls `on_epoch`.

    Fine-tuning: `init_weights` is a state_dict loaded strictly before training (Meta's
    `imagebind_huge.pth` for `ImageBindConfig.huge()`); with `lora`, peft adapters go on the
    native trunks of the trained towers, only they (and the heads, if `lora.train_heads`) train,
    and they are merged into the weights at the end. The returned model is a plain `ImageBind`
    on the CPU either way.
    """
    data.validate(model_config)
    bound = data.bound()
    if len(data) < 2:
        raise ValueError(f"need at least 2 training rows for a contrastive loss, got {len(data)}")
    started = time.perf_counter()
    parallel = DataParallel.current()
    if train_config.batch_size < parallel.world_size:
        raise ValueError(f"batch_size {train_config.batch_size} leaves some of {parallel.world_size} processes no rows")
    device = resolve_device(train_config.device)
    torch.manual_seed(train_config.seed)
    model = ImageBind(model_config)
    if init_weights is not None:
        model.load_state_dict(init_weights, strict=True)
    peft_model, adapted = None, None
    if lora is not None:
        from models.lora import add_imagebind_lora

        # peft injects the adapters into `model` itself; the loop keeps training that module.
        trained_towers = (VISION, TEXT, *bound)
        peft_model = add_imagebind_lora(model, lora, [m for m in trained_towers if _native_trunk(model, m)])
        adapted = {id(p) for p in model.parameters() if p.requires_grad}
    model.to(device).train()
    text_dtype = np.int64 if model_config.text_input_dim is None else np.float32  # token ids or embeddings
    tensors = {
        VISION: torch.from_numpy(np.ascontiguousarray(data.image, dtype=np.float32)),
        **{m: torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)) for m, values in bound.items()},
        TEXT: torch.from_numpy(np.ascontiguousarray(data.text_emb, dtype=text_dtype)),
    }
    labels = torch.from_numpy(data.label.astype(np.int64)) if train_config.label_aware else None
    fingerprint: dict[str, Any] = {}  # hashing the data costs ~20 ms: only for runs that checkpoint
    checkpoint = None
    if train_config.checkpoint_dir is not None:
        fingerprint = run_fingerprint(
            # audio second, as when it was the only other modality: such checkpoints still resume
            (data.image, *bound.values(), data.text_emb, data.label) if set(bound) == {AUDIO}
            else (data.image, data.text_emb, data.label, *bound.values()),
            model=model_config.to_dict(),
            train={k: v for k, v in asdict(train_config).items() if k not in RESUMABLE_ACROSS},
            start={"lora": None if lora is None else asdict(lora), "init_weights": state_digest(init_weights)},
        )
        checkpoint = load_checkpoint(train_config.checkpoint_dir)
    history: list[dict[str, float | int | str]] = []
    if checkpoint is not None:
        check_resumable(checkpoint["fingerprint"], fingerprint, str(train_config.checkpoint_dir))
        model.load_state_dict(checkpoint["model"])
        history = list(checkpoint["history"])
        restore_rng_state(checkpoint["rng"])
    def shift(images: Tensor, generator: torch.Generator) -> Tensor:
        return random_shift(images, train_config.image_shift, generator)

    # Audio is augmented only where its tower trains (the audio stage); a frozen tower's embeddings are cached.
    augment: dict[str, Augment] = {VISION: shift}
    if train_config.audio_augment.enabled:
        augment[AUDIO] = train_config.audio_augment
    loop = _Loop(model, train_config, device, parallel, tensors, labels, augment, history, fingerprint, on_epoch,
                 on_step_losses, adapted)

    stages = [(STAGE_IMAGE_TEXT, (VISION, TEXT), (VISION, TEXT), train_config.epochs_stage1),
              *(binding_stage_plan(m, train_config) for m in bound)]
    resume_index = -1 if checkpoint is None else [s[0] for s in stages].index(checkpoint["stage"])
    with torch_threads(train_config.num_threads):
        for index, (stage, pair, trained, epochs) in enumerate(stages):
            if stage != STAGE_IMAGE_TEXT:
                # ImageBind's binding stages: images are the fixed anchor every other modality is pulled onto.
                freeze(model.tower_modules(VISION))
            if index >= resume_index:
                loop.run_stage(index, stage, pair, trained, epochs, checkpoint if index == resume_index else None)
    if peft_model is not None:
        from models.lora import merge_lora

        model = merge_lora(peft_model)  # the base class and keys again, adapters folded in
    model.eval().to("cpu")
    return TrainResult(model=model, history=history, seconds=time.perf_counter() - started)


def _native_trunk(model: ImageBind, modality: str) -> bool:
    from models.imagebind.transformer import Transformer

    return modality in model.config.modalities and isinstance(model.modality_trunks[modality], Transformer)

"""The built-in families' names and the metrics their gate scoring computes (pure: no heavy imports).

- `imagebind`: the multimodal binding model (images, text and whatever else the data carries: audio,
  depth, thermal, imu, in one space), zero-shot by the task's class prompts;
- `lora`: a caption → class classifier, peft adapters on the frozen MiniLM text encoder, merged for serving.

The families themselves (`flows.families.imagebind`, `flows.families.lora`) implement
`models.family.ModelFamily`; this module only declares, without importing torch, the names a saved
model's config carries and which way each metric is better (the direction belongs to the metric, so
a threshold in params.yaml only says how much may change).
"""

from models.gate import HIGHER, LOWER

IMAGEBIND_FAMILY, LORA_FAMILY = "imagebind", "lora"

# Measured for every family by models/gate_scoring.py (LATENCY_METRIC, SIZE_METRIC): less is better.
BUDGET_DIRECTIONS = {"p95_latency_ms": LOWER, "model_size_mb": LOWER}
# The modalities ImageBind binds to images besides text (models.imagebind.BOUND_MODALITIES, named here
# without importing torch); a task measures those its data carries.
IMAGEBIND_BOUND = ("audio", "depth", "thermal", "imu")
IMAGE_METRIC = "zero_shot_image_acc"  # image's nearest class prompt is its class: every ImageBind task has it
CAPTION_METRIC = "caption_acc"  # share of golden captions classified as their class


def zero_shot_metric(modality: str) -> str:
    """A bound modality classified by its nearest class prompt (emergent: never trained on text)."""
    return f"zero_shot_{modality}_acc"


def to_image_metric(modality: str) -> str:
    """A bound modality's nearest golden image shares its class: recall@1 of the binding itself."""
    return f"{modality}_to_image_r1"


# models/evaluate.py::correct_per_row: zero-shot accuracies and →image recall@1 per bound modality
IMAGEBIND_METRICS: dict[str, str] = {
    IMAGE_METRIC: HIGHER, **{name(m): HIGHER for m in IMAGEBIND_BOUND for name in (zero_shot_metric, to_image_metric)},
    **BUDGET_DIRECTIONS}
# models/lora_family.py::caption_correct_per_row
CAPTION_METRICS: dict[str, str] = {CAPTION_METRIC: HIGHER, **BUDGET_DIRECTIONS}

"""The model families `params.yaml` `train.family` chooses between (names only: no heavy imports).

- `imagebind`: the multimodal binding model (images, text and whatever else the data carries: audio,
  depth, thermal, imu, in one space), zero-shot by the task's class prompts;
- `lora`: a caption → class classifier, peft adapters on the frozen MiniLM text encoder, merged for serving.

A saved model names its family (config.json `family`, ImageBind's config has none), so loading a
registered version gives back the right object, and the gate never compares two families.

Each family also declares the metrics its gate scoring computes and which way each is better
(`METRIC_DIRECTIONS`): the direction belongs to the metric, so a threshold in params.yaml only says
how much may change, and a metric no family computes is refused when the parameters are read.
"""

from models.gate import HIGHER, LOWER

IMAGEBIND_FAMILY, LORA_FAMILY = "imagebind", "lora"
FAMILIES: tuple[str, ...] = (IMAGEBIND_FAMILY, LORA_FAMILY)

# Measured for every family by models/gate_scoring.py (LATENCY_METRIC, SIZE_METRIC): less is better.
_BUDGETS = {"p95_latency_ms": LOWER, "model_size_mb": LOWER}
# The modalities ImageBind binds to images besides text (models.imagebind.BOUND_MODALITIES, named here
# without importing torch); a task measures those its data carries.
IMAGEBIND_BOUND = ("audio", "depth", "thermal", "imu")
IMAGE_METRIC = "zero_shot_image_acc"  # image's nearest class prompt is its class: every ImageBind task has it


def zero_shot_metric(modality: str) -> str:
    """A bound modality classified by its nearest class prompt (emergent: never trained on text)."""
    return f"zero_shot_{modality}_acc"


def to_image_metric(modality: str) -> str:
    """A bound modality's nearest golden image shares its class: recall@1 of the binding itself."""
    return f"{modality}_to_image_r1"


METRIC_DIRECTIONS: dict[str, dict[str, str]] = {
    # models/evaluate.py::correct_per_row: zero-shot accuracies and →image recall@1 per bound modality
    IMAGEBIND_FAMILY: {IMAGE_METRIC: HIGHER,
                       **{name(m): HIGHER for m in IMAGEBIND_BOUND for name in (zero_shot_metric, to_image_metric)},
                       **_BUDGETS},
    # models/lora_family.py::caption_correct_per_row (CAPTION_METRIC)
    LORA_FAMILY: {"caption_acc": HIGHER, **_BUDGETS},
}


def metric_directions(family: str) -> dict[str, str]:
    """metric → HIGHER or LOWER is better, for every metric `family`'s gate scoring computes."""
    if family not in METRIC_DIRECTIONS:
        raise ValueError(f"unknown model family {family!r}; families: {list(FAMILIES)}")
    return METRIC_DIRECTIONS[family]


def family_of(model: object) -> str:
    """The family of a loaded model (what `models.registry.load_version` returns)."""
    from models.imagebind import ImageBind

    if isinstance(model, ImageBind):
        return IMAGEBIND_FAMILY
    from models.lora import CaptionClassifier

    if isinstance(model, CaptionClassifier):
        return LORA_FAMILY
    raise TypeError(f"{type(model).__name__} belongs to no model family; expected ImageBind or CaptionClassifier")

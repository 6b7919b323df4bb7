"""The model families `params.yaml` `train.family` chooses between (names only: no heavy imports).

- `imagebind`: the multimodal binding model (image, audio, text in one space), zero-shot by prompts;
- `lora`: a caption → digit classifier, peft adapters on the frozen MiniLM text encoder, merged for serving.

A saved model names its family (config.json `family`, ImageBind's config has none), so loading a
registered version gives back the right object, and the gate never compares two families.
"""

IMAGEBIND_FAMILY, LORA_FAMILY = "imagebind", "lora"
FAMILIES: tuple[str, ...] = (IMAGEBIND_FAMILY, LORA_FAMILY)


def family_of(model: object) -> str:
    """The family of a loaded model (what `models.registry.load_version` returns)."""
    from models.imagebind import ImageBind

    if isinstance(model, ImageBind):
        return IMAGEBIND_FAMILY
    from models.lora import CaptionClassifier

    if isinstance(model, CaptionClassifier):
        return LORA_FAMILY
    raise TypeError(f"{type(model).__name__} belongs to no model family; expected ImageBind or CaptionClassifier")

"""ImageBind: one embedding space for many modalities, bound through images.

Follows the paper and Meta's release: `config` (sizes; the demo default, `huge()` and
`from_official_kwargs()`), `preprocessors`, `transformer` (trunks), `heads` (heads and
postprocessors) and `model` (the modality-keyed `ImageBind`). `official` lists the official
constructor's arguments. With `ImageBindConfig.huge()` the state_dict has the official
checkpoint's keys and shapes, so `imagebind_huge.pth` loads strictly.
"""

from models.imagebind.config import (
    AUDIO,
    AUDIO_MEL_POOL_LAYOUTS,
    BOUND_MODALITIES,
    DEPTH,
    IMU,
    MODALITIES,
    TEXT,
    THERMAL,
    VISION,
    ImageBindConfig,
    config_modalities,
)
from models.imagebind.model import ImageBind

__all__ = ["AUDIO", "AUDIO_MEL_POOL_LAYOUTS", "BOUND_MODALITIES", "DEPTH", "IMU", "MODALITIES", "TEXT", "THERMAL",
           "VISION", "ImageBind", "ImageBindConfig", "config_modalities"]

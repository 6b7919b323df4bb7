"""flywheel's own model families, registered as entry points of `flywheel.families` (pyproject.toml)
like any plug-in's: `imagebind` (flows.families.imagebind) and `lora` (flows.families.lora).

The protocol they implement and the resolver are in `models.family`; `configured_family` is the family
params.yaml `train.family` names.
"""

from __future__ import annotations

import hashlib

from models.family import ModelFamily, load_family


def configured_family(settings) -> ModelFamily:
    """The family `train.family` names (a registered name or an import path), resolved once per process."""
    return load_family(settings.params.train.family)


def source_digest(*modules: str) -> str:
    """A digest of the named modules' source (a package: every .py under it), as the stage cache hashes code:
    a family's code in training's cache key, so editing the family retrains."""
    from flows.stage_cache import module_digest

    return hashlib.sha256("".join(f"{m}:{module_digest(m)}" for m in modules).encode()).hexdigest()[:16]

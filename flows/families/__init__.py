"""flywheel's own model families, registered as entry points of `flywheel.families` (pyproject.toml)
like any plug-in's: `imagebind` (flows.families.imagebind) and `lora` (flows.families.lora).

The protocol they implement and the resolver are in `models.family`; `configured_family` is the family
params.yaml `train.family` names.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from models.family import ModelFamily, load_family


def configured_family(settings) -> ModelFamily:
    """The family `train.family` names (a registered name or an import path), resolved once per process."""
    return load_family(settings.params.train.family)


def source_digest(*modules: str) -> str:
    """sha256 of the named modules' source files (a package: every .py under it), found without importing:
    a family's code in training's cache key, so editing the family retrains."""
    digest = hashlib.sha256()
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ValueError(f"module {module!r} not found: a family's code digest names importable modules")
        origin = Path(spec.origin)
        for path in sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]

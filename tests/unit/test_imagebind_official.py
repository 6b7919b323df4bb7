"""Numeric equivalence with Meta's ImageBind code, given a checkout of it.

Set FLYWHEEL_IMAGEBIND_OFFICIAL_SRC to the root of a checkout of
github.com/facebookresearch/ImageBind (the folder holding `imagebind/`). The test builds a
small official model and ours from the same keyword arguments, loads the official weights
into ours with strict=True, and compares embeddings for every modality. Skipped otherwise.

The official package imports a few third-party helpers that the project does not install
(timm, einops, ftfy, iopath); where missing, minimal stand-ins are put in `sys.modules` for
the import only. None of them affects an evaluation-mode forward pass except einops'
transposes, which the stand-in performs.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.imagebind import MODALITIES, ImageBind, ImageBindConfig

SOURCE_ENV = "FLYWHEEL_IMAGEBIND_OFFICIAL_SRC"
# Small enough for a CPU test, with every structural feature of the real thing.
SMALL_KWARGS = dict(
    out_embed_dim=24,
    vision_embed_dim=32,
    vision_num_blocks=2,
    vision_num_heads=4,
    audio_embed_dim=16,
    audio_num_blocks=2,
    audio_num_heads=2,
    text_embed_dim=32,
    text_num_blocks=2,
    text_num_heads=4,
    depth_embed_dim=16,
    depth_num_blocks=1,
    depth_num_heads=2,
    thermal_embed_dim=16,
    thermal_num_blocks=1,
    thermal_num_heads=2,
    imu_embed_dim=16,
    imu_num_blocks=2,
    imu_num_heads=2,
)
TOLERANCE = 1e-5  # float32: embeddings are O(1) to O(20) after the logit scales


def _stand_in_modules() -> dict[str, types.ModuleType]:
    """Minimal stand-ins for the official code's imports that are not installed here."""

    def drop_path(p: float = 0.0, **_: object) -> torch.nn.Module:
        return torch.nn.Identity()  # only active in training; this test runs in eval mode

    def rearrange(x: torch.Tensor, expression: str) -> torch.Tensor:
        source, target = (side.split() for side in expression.split("->"))
        return x.permute(*[source.index(name) for name in target])

    timm, layers = types.ModuleType("timm"), types.ModuleType("timm.layers")
    layers.DropPath = drop_path  # type: ignore[attr-defined]
    layers.trunc_normal_ = torch.nn.init.trunc_normal_  # type: ignore[attr-defined]
    timm.layers = layers  # type: ignore[attr-defined]
    einops = types.ModuleType("einops")
    einops.rearrange = rearrange  # type: ignore[attr-defined]
    ftfy = types.ModuleType("ftfy")
    ftfy.fix_text = lambda text: text  # type: ignore[attr-defined]
    file_io = types.ModuleType("iopath.common.file_io")
    file_io.g_pathmgr = types.SimpleNamespace(open=open)  # type: ignore[attr-defined]
    return {
        "timm": timm,
        "timm.layers": layers,
        "einops": einops,
        "ftfy": ftfy,
        "iopath": types.ModuleType("iopath"),
        "iopath.common": types.ModuleType("iopath.common"),
        "iopath.common.file_io": file_io,
    }


@pytest.fixture(scope="module")
def official_model_module() -> Iterator[types.ModuleType]:
    source = os.environ.get(SOURCE_ENV)
    if not source:
        pytest.skip(f"{SOURCE_ENV} is not set")
    package_dir = Path(source) / "imagebind"
    if not (package_dir / "models" / "imagebind_model.py").is_file():
        pytest.fail(f"{SOURCE_ENV}={source} does not hold imagebind/models/imagebind_model.py")
    added: list[str] = []
    for name, module in _stand_in_modules().items():
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = module
            added.append(name)
    # Register the package without running its __init__, which imports the data transforms
    # (torchvision, torchaudio); the model modules do not need them.
    package = types.ModuleType("imagebind")
    package.__path__ = [str(package_dir)]  # type: ignore[attr-defined]
    sys.modules["imagebind"] = package
    added.append("imagebind")
    try:
        yield importlib.import_module("imagebind.models.imagebind_model")
    finally:
        for name in [n for n in sys.modules if n in added or n.startswith("imagebind.")]:
            del sys.modules[name]


def _inputs(batch: int = 2, clips: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(batch, 77, dtype=torch.long)
    for row, length in enumerate((5, 40)[:batch]):
        ids[row, 0] = 49406  # start of text
        ids[row, 1:length] = torch.randint(1, 49405, (length - 1,), generator=g)
        ids[row, length] = 49407  # end of text: the largest id, where the head reads
    return {
        "vision": torch.randn(batch, 3, 224, 224, generator=g),
        "text": ids,
        "audio": torch.randn(batch, clips, 1, 128, 204, generator=g),
        "depth": torch.randn(batch, 1, 224, 224, generator=g),
        "thermal": torch.randn(batch, 1, 224, 224, generator=g),
        "imu": torch.randn(batch, 6, 2000, generator=g),
    }


def test_embeddings_equal_the_official_implementation(official_model_module: types.ModuleType) -> None:
    torch.manual_seed(0)
    official = official_model_module.ImageBindModel(**SMALL_KWARGS).eval()
    # Randomise every weight (LayerNorms start at 1/0 and biases at 0, which would hide a
    # swapped or missing term); keep the causal mask and the fixed logit scales.
    state = official.state_dict()
    g = torch.Generator().manual_seed(1)
    for key, value in state.items():
        if value.is_floating_point() and not key.endswith(("mask", "log_logit_scale")):
            state[key] = value + 0.1 * torch.randn(value.shape, generator=g)
    official.load_state_dict(state, strict=True)
    ours = ImageBind(ImageBindConfig.from_official_kwargs(**SMALL_KWARGS)).eval()
    ours.load_state_dict(state, strict=True)

    inputs = _inputs()
    with torch.no_grad():
        expected, got = official(dict(inputs)), ours(dict(inputs))
    assert set(got) == set(expected) == set(MODALITIES)
    differences = {m: (got[m] - expected[m]).abs().max().item() for m in MODALITIES}
    print(f"\nmax abs difference per modality: {differences}")
    for modality in MODALITIES:
        assert got[modality].shape == expected[modality].shape == (2, SMALL_KWARGS["out_embed_dim"])
        torch.testing.assert_close(got[modality], expected[modality], rtol=0, atol=TOLERANCE)

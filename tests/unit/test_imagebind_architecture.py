"""The ImageBind architecture beyond the demo: all six modalities, official sizes and keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from models.imagebind import MODALITIES, ImageBind, ImageBindConfig

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
OFFICIAL_HUGE_KEYS = SHARED / "imagebind" / "official_huge_state_dict.json"
SMALL = ImageBindConfig(modalities=MODALITIES, text_input_dim=None, text_context_length=12, text_vocab_size=50)
# Official layout (224-pixel inputs, 77-token text, 6×2000 IMU) at a CPU-friendly width.
SMALL_OFFICIAL_KWARGS = {
    f"{m}_{part}": value
    for m in ("vision", "audio", "text", "depth", "thermal", "imu")
    for part, value in (("embed_dim", 16), ("num_blocks", 1), ("num_heads", 2))
}


def small_inputs(config: ImageBindConfig, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.text_vocab_size - 1, (batch, config.text_context_length), generator=g)
    ids[:, -1] = config.text_vocab_size - 1  # end of text: the largest id
    return {
        "vision": torch.rand(batch, config.image_channels, config.image_size, config.image_size, generator=g),
        "text": ids,
        "audio": torch.randn(batch, config.audio_frames, config.audio_n_mels, generator=g),
        "depth": torch.randn(batch, 1, config.depth_image_size, config.depth_image_size, generator=g),
        "thermal": torch.randn(batch, 1, config.thermal_image_size, config.thermal_image_size, generator=g),
        "imu": torch.randn(batch, config.imu_channels, config.imu_length, generator=g),
    }


def expected_scale(config: ImageBindConfig, modality: str) -> float:
    scales = {"vision": 1.0, "text": config.text_logit_scale_init}
    return scales.get(modality, getattr(config, f"{modality}_logit_scale", 1.0))


SMALL_OFFICIAL = ImageBindConfig.from_official_kwargs(out_embed_dim=8, **SMALL_OFFICIAL_KWARGS)


@pytest.mark.parametrize("config", [SMALL, SMALL_OFFICIAL])
def test_every_modality_embeds_to_a_scaled_unit_vector(config: ImageBindConfig) -> None:
    model = ImageBind(config).eval()
    with torch.no_grad():
        out = model(small_inputs(config, 3))
    assert set(out) == set(MODALITIES)
    for modality, emb in out.items():
        assert emb.shape == (3, config.embed_dim), modality
        scale = expected_scale(config, modality)
        torch.testing.assert_close(emb.norm(dim=-1), torch.full((3,), scale), msg=modality)
        assert model.logit_scale(modality) == pytest.approx(scale)


def test_clips_are_embedded_one_by_one_then_averaged() -> None:
    model = ImageBind(SMALL).eval()
    audio = torch.randn(2, 3, 1, SMALL.audio_n_mels, SMALL.audio_frames)  # (B, clips, 1, M, T)
    with torch.no_grad():
        averaged = model({"audio": audio})["audio"]
        per_clip = model({"audio": audio.reshape(6, 1, SMALL.audio_n_mels, SMALL.audio_frames)})["audio"]
    torch.testing.assert_close(averaged, per_clip.reshape(2, 3, -1).mean(dim=1))


def test_text_reads_the_end_of_text_token_through_a_causal_mask() -> None:
    model = ImageBind(SMALL).eval()
    ids = torch.tensor([[3, 7, 49, 0, 0, 0, 0, 0, 0, 0, 0, 0]])  # 49 = largest id: end of text
    after_end, before_end = ids.clone(), ids.clone()
    after_end[0, 5] = 11  # padding after the end token cannot be seen from it
    before_end[0, 1] = 11
    with torch.no_grad():
        base, after, before = (model({"text": t})["text"] for t in (ids, after_end, before_end))
    torch.testing.assert_close(after, base)
    assert not torch.allclose(before, base)


def test_inputs_of_the_wrong_shape_are_rejected_with_the_expected_shape() -> None:
    model = ImageBind(SMALL)
    with pytest.raises(ValueError, match=r"imu input must be \(B, 6, 160\)"):
        model({"imu": torch.zeros(1, 6, 150)})
    with pytest.raises(ValueError, match="integer token ids"):
        model({"text": torch.zeros(1, SMALL.text_context_length)})
    with pytest.raises(ValueError, match=r"depth input must be \(B, 1, 16, 16\)"):
        model({"depth": torch.zeros(1, 3, 16, 16)})


@pytest.mark.skipif(not OFFICIAL_HUGE_KEYS.is_file(), reason=f"{OFFICIAL_HUGE_KEYS} is absent")
def test_huge_has_exactly_the_official_checkpoint_keys_and_shapes() -> None:
    official = {key: tuple(shape) for key, shape in json.loads(OFFICIAL_HUGE_KEYS.read_text()).items()}
    with torch.device("meta"):
        model = ImageBind(ImageBindConfig.huge())
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k for k in ours if ours[k] != official[k]} == set()
    assert sum(torch.Size(shape).numel() for shape in ours.values()) == 1_200_786_990
    # A checkpoint with these keys loads strictly (meta tensors: nothing is allocated).
    checkpoint = {key: torch.empty(shape, device="meta") for key, shape in official.items()}
    model.load_state_dict(checkpoint, strict=True, assign=True)


def test_official_kwargs_reject_unknown_names_and_listing_the_accepted_ones() -> None:
    unknown = r"unknown official ImageBindModel keyword arguments \['vision_depth'\]"
    with pytest.raises(ValueError, match=unknown) as err:
        ImageBindConfig.from_official_kwargs(vision_depth=3)
    assert "vision_num_blocks" in str(err.value)
    with pytest.raises(ValueError, match="imu_kernel_size 4 is ignored"):
        ImageBindConfig.from_official_kwargs(imu_kernel_size=4)
    with pytest.raises(ValueError, match="square"):
        ImageBindConfig.from_official_kwargs(kernel_size=(2, 14, 16))


def test_official_kwargs_use_the_official_defaults_and_round_trip_through_json() -> None:
    config = ImageBindConfig.from_official_kwargs()
    assert (config.embed_dim, config.vision_width, config.vision_depth, config.depth_width) == (768, 1024, 24, 384)
    assert config.modalities == MODALITIES
    huge = ImageBindConfig.huge()
    assert (huge.embed_dim, huge.vision_width, huge.text_width, huge.text_depth) == (1024, 1280, 1024, 24)
    assert ImageBindConfig.from_dict(json.loads(json.dumps(huge.to_dict()))) == huge


LEGACY_BLOCK_NAMES = (
    ("attn", "self_attn"),
    ("mlp.fc1", "linear1"),
    ("mlp.fc2", "linear2"),
    ("norm_1", "norm1"),
    ("norm_2", "norm2"),
)


def test_demo_checkpoints_saved_before_the_package_split_still_load() -> None:
    # The pre-split demo used nn.TransformerEncoder names and a one-element logit scale.
    model = ImageBind().eval()
    legacy = {}
    for key, value in model.state_dict().items():
        old = key.replace(".rgbt_stem.norm_layer.", ".tokenizer.stem_norm.")
        old = old.replace(".rgbt_stem.proj.", ".tokenizer.stem.")
        old = old.replace(".pos_embedding_helper.pos_embed", ".tokenizer.pos_embed")
        old = re.sub(r"\.cls_token$", ".tokenizer.cls_token", old)
        for new_name, old_name in LEGACY_BLOCK_NAMES:
            old = re.sub(rf"\.blocks\.(\d+)\.{re.escape(new_name)}\.", rf".blocks.layers.\1.{old_name}.", old)
        legacy[old] = value.reshape(1) if key.endswith("log_logit_scale") else value
    assert "modality_trunks.vision.blocks.layers.0.self_attn.in_proj_weight" in legacy
    reloaded = ImageBind().eval()
    reloaded.load_state_dict(legacy, strict=True)
    inputs = {
        "vision": torch.rand(2, 1, 16, 16),
        "audio": torch.randn(2, 100, 40),
        "text": torch.randn(2, 384),
    }
    with torch.no_grad():
        expected, got = model(inputs), reloaded(inputs)
    for modality in expected:
        assert torch.equal(expected[modality], got[modality]), modality

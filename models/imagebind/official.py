"""Meta's `ImageBindModel` keyword arguments, and the `ImageBindConfig` fields they mean.

Only names and values live here (the official constructor's signature and the settings
that constructor fixes internally); the model is our own code.
"""

from __future__ import annotations

from typing import Any

# The keyword arguments of the official `ImageBindModel.__init__`, with its defaults.
OFFICIAL_DEFAULTS: dict[str, Any] = {
    "video_frames": 2,
    "kernel_size": (2, 14, 14),
    "audio_kernel_size": 16,
    "audio_stride": 10,
    "out_embed_dim": 768,
    "vision_embed_dim": 1024,
    "vision_num_blocks": 24,
    "vision_num_heads": 16,
    "audio_embed_dim": 768,
    "audio_num_blocks": 12,
    "audio_num_heads": 12,
    "audio_num_mel_bins": 128,
    "audio_target_len": 204,
    "audio_drop_path": 0.1,
    "text_embed_dim": 768,
    "text_num_blocks": 12,
    "text_num_heads": 12,
    "depth_embed_dim": 384,
    "depth_kernel_size": 16,
    "depth_num_blocks": 12,
    "depth_num_heads": 8,
    "depth_drop_path": 0.0,
    "thermal_embed_dim": 768,
    "thermal_kernel_size": 16,
    "thermal_num_blocks": 12,
    "thermal_num_heads": 12,
    "thermal_drop_path": 0.0,
    "imu_embed_dim": 512,
    "imu_kernel_size": 8,
    "imu_num_blocks": 6,
    "imu_num_heads": 8,
    "imu_drop_path": 0.7,
}

# What the official `imagebind_huge()` passes; its checkpoint is `imagebind_huge.pth`.
HUGE_OFFICIAL_KWARGS: dict[str, Any] = {
    "vision_embed_dim": 1280,
    "vision_num_blocks": 32,
    "vision_num_heads": 16,
    "text_embed_dim": 1024,
    "text_num_blocks": 24,
    "text_num_heads": 16,
    "out_embed_dim": 1024,
    "audio_drop_path": 0.1,
    "imu_drop_path": 0.7,
}

# Settings the official constructor fixes whatever the arguments: 224-pixel RGB, depth and
# thermal inputs, CLIP's 77-token text with its 49,408-id vocabulary, 6×2000 IMU series cut
# into 8-sample patches, eps-1e-6 LayerNorms, and each modality's fixed logit scale.
OFFICIAL_FIXED: dict[str, Any] = {
    "image_size": 224,
    "image_channels": 3,
    "vision_stem_norm": False,
    "vision_pre_norm": True,
    "vision_drop_path": 0.0,
    "audio_bias_kv": True,
    "audio_mean": 0.0,  # the official data transform standardises; the model sees its output
    "audio_std": 1.0,
    "text_input_dim": None,
    "text_vocab_size": 49408,
    "text_context_length": 77,
    "text_drop_path": 0.0,
    "depth_image_size": 224,
    "thermal_image_size": 224,
    "imu_channels": 6,
    "imu_length": 2000,
    "imu_patch_size": 8,
    "imu_head_dropout": 0.5,
    "mlp_ratio": 4.0,
    "dropout": 0.0,
    "block_norm_eps": 1e-6,
    "official_init": True,
    "text_logit_scale_init": 1 / 0.07,
    "audio_logit_scale": 20.0,
    "depth_logit_scale": 5.0,
    "thermal_logit_scale": 10.0,
    "imu_logit_scale": 5.0,
    "max_logit_scale": 100.0,
}

# Official keyword → the field it sets, one to one.
_FIELD_OF_KWARG: dict[str, str] = {
    "out_embed_dim": "embed_dim",
    "video_frames": "vision_video_frames",
    "audio_stride": "audio_stride",
    "audio_num_mel_bins": "audio_n_mels",
    "audio_target_len": "audio_frames",
    "depth_kernel_size": "depth_patch_size",
    "thermal_kernel_size": "thermal_patch_size",
    **{
        f"{m}_{official}": f"{m}_{ours}"
        for m in ("vision", "audio", "text", "depth", "thermal", "imu")
        for official, ours in (("embed_dim", "width"), ("num_blocks", "depth"), ("num_heads", "heads"))
    },
    **{f"{m}_drop_path": f"{m}_drop_path" for m in ("audio", "depth", "thermal", "imu")},
}


def official_config_fields(**kwargs: Any) -> dict[str, Any]:
    """`ImageBindConfig` field values (all but `modalities`) for `ImageBindModel(**kwargs)`."""
    unknown = sorted(set(kwargs) - set(OFFICIAL_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown official ImageBindModel keyword arguments {unknown}; accepted: {sorted(OFFICIAL_DEFAULTS)}"
        )
    given = {**OFFICIAL_DEFAULTS, **kwargs}
    kernel = tuple(given["kernel_size"])
    if len(kernel) != 3 or kernel[1] != kernel[2]:
        raise ValueError(f"kernel_size must be (frames, side, side) with square patches, got {given['kernel_size']}")
    if given["imu_kernel_size"] != OFFICIAL_FIXED["imu_patch_size"]:
        # The official constructor accepts it but always cuts 8-sample patches (48 = 6 × 8 inputs).
        raise ValueError(
            f"imu_kernel_size {given['imu_kernel_size']} is ignored by the official ImageBindModel, "
            f"which always uses {OFFICIAL_FIXED['imu_patch_size']}; pass 8 or leave it out"
        )
    audio_kernel = given["audio_kernel_size"]
    return {
        **OFFICIAL_FIXED,
        **{ours: given[official] for official, ours in _FIELD_OF_KWARG.items()},
        "vision_patch_frames": kernel[0],
        "patch_size": kernel[1],
        "audio_patch_mels": audio_kernel,
        "audio_patch_frames": audio_kernel,
    }

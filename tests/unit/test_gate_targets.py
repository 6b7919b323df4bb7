"""The gate's targets, judged by the shipped params.yaml policy on a synthetic golden set:
a sabotaged candidate (fitted on shuffled pairs) is rejected, a genuinely better one passes, and a
candidate better on average but broken on one accent is rejected by the voice-group slice check by name.

The models are nearest-centroid models behind ImageBind's interface (modality dict in, embeddings
out), "trained" in closed form, so the gate's whole scoring path (per-row correctness, interleaved
p95 latency, size, paired bootstrap) runs in about a second instead of minutes of training.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flows.settings import load_settings
from flows.stage_config import gate_policy
from models.evaluate import EvalData
from models.gate import decide
from models.gate_scoring import golden_groups, score_models
from models.imagebind import AUDIO, TEXT, VISION
from tests.conftest import PROJECT, with_unreachable_latency_bounds

K, VOICES, TEXT_DIM = 10, ("v0", "v1", "v2", "v3"), 384
WORLD = np.random.default_rng(0)
IMAGE_T = WORLD.random((K, 1, 16, 16)).astype(np.float32)
AUDIO_T = WORLD.normal(size=(K, 100, 40)).astype(np.float32)
VOICE_T = {v: WORLD.normal(size=(100, 40)).astype(np.float32) for v in VOICES}
PROMPTS = np.eye(K, TEXT_DIM, dtype=np.float32)  # class k's prompt embedding


def sample(n: int, seed: int, noise: float = 0.8) -> EvalData:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, K, n)
    voice = [VOICES[i] for i in rng.integers(0, len(VOICES), n)]
    image = IMAGE_T[label] + rng.normal(0, noise, (n, 1, 16, 16))
    audio = AUDIO_T[label] + np.stack([VOICE_T[v] for v in voice]) + rng.normal(0, 2 * noise, (n, 100, 40))
    return EvalData(image.astype(np.float32), label, groups={"voice_group": voice}, audio=audio.astype(np.float32))


class CentroidModel(torch.nn.Module):
    """Embeds each modality as softmax(-distance² to each class centroid / temperature): its nearest
    prompt is its nearest centroid. `blind_voice` scrambles the audio embedding of one accent."""

    def __init__(self, train: EvalData, blind_voice: str | None = None) -> None:
        super().__init__()
        self.config = SimpleNamespace(text_input_dim=TEXT_DIM, embed_dim=K, modalities=(VISION, AUDIO, TEXT))
        voices = np.asarray(train.groups["voice_group"])
        audio = train.audio - np.stack([train.audio[voices == v].mean(0) for v in train.groups["voice_group"]])  # voice-normalised
        self.image_c = torch.nn.Parameter(torch.from_numpy(np.stack([train.image[train.label == k].mean(0) for k in range(K)]).reshape(K, -1)))
        self.audio_c = torch.nn.Parameter(torch.from_numpy(np.stack([audio[train.label == k].mean(0) for k in range(K)]).reshape(K, -1)))
        self.voice_c = torch.nn.Parameter(torch.from_numpy(np.stack([train.audio[voices == v].mean(0) for v in VOICES]).reshape(len(VOICES), -1)))
        self.blind = VOICES.index(blind_voice) if blind_voice else None

    @staticmethod
    def _soft(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(x, centroids) ** 2  # (B, K)
        return torch.softmax(-(d2 - d2.min(dim=1, keepdim=True).values) / 50.0, dim=1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for modality, x in inputs.items():
            x = x.reshape(len(x), -1)
            if modality == TEXT:
                out[TEXT] = x[:, :K] + 1e-6
            elif modality == VISION:
                out[VISION] = self._soft(x, self.image_c)
            else:
                voice = torch.cdist(x, self.voice_c).argmin(dim=1)  # (B,) which accent is speaking
                embedding = self._soft(x - self.voice_c[voice], self.audio_c)
                if self.blind is not None:  # that accent's embeddings land on the wrong class
                    embedding = torch.where((voice == self.blind)[:, None], embedding.roll(3, dims=1), embedding)
                out[AUDIO] = embedding
        return out


@pytest.fixture(scope="module")
def judged():
    policy = with_unreachable_latency_bounds(gate_policy(load_settings(None, PROJECT / "params.yaml")))
    golden = sample(400, seed=1)
    champion_data, big = sample(20, seed=2, noise=2.4), sample(600, seed=3)  # few noisy pairs vs plenty
    shuffled = EvalData(big.image, np.random.default_rng(4).permutation(big.label), groups=big.groups, audio=big.audio)
    models = {"champion": CentroidModel(champion_data), "better": CentroidModel(big),
              "sabotaged": CentroidModel(shuffled), "accent_broken": CentroidModel(big, blind_voice="v3")}
    scores = score_models(models, golden, PROMPTS, latency_items=20)
    groups = golden_groups(golden, [str(k) for k in range(K)])
    return {name: decide(scores[name], scores["champion"], policy, groups) for name in models if name != "champion"}


def test_a_genuinely_better_candidate_is_promoted(judged):
    better = judged["better"]
    assert better.passed, better.reason
    change = next(c for c in better.checks if c.name == "zero_shot_audio_acc change")
    assert change.interval[0] > 0.05  # a clear gain: the whole interval is above zero
    assert any(c.slice == "voice_group=v3" for c in better.checks) and any(c.metric == "p95_latency_ms" for c in better.checks)


def test_a_sabotaged_candidate_is_rejected_on_value_and_change_checks(judged):
    sabotaged = judged["sabotaged"]
    assert not sabotaged.passed
    failed = {c.name for c in sabotaged.failed_checks()}
    assert {"zero_shot_image_acc min", "zero_shot_image_acc change", "zero_shot_audio_acc change"} <= failed


def test_better_on_average_but_broken_on_one_accent_is_rejected_by_the_slice_check(judged):
    broken, better = judged["accent_broken"], judged["better"]
    assert broken.challenger["zero_shot_audio_acc"] > broken.champion["zero_shot_audio_acc"] + 0.1
    headline = [c for c in broken.checks if c.slice is None]
    assert all(c.passed for c in headline), [c.explain() for c in headline if not c.passed]
    assert not broken.passed
    failed = broken.failed_checks()
    assert all(c.slice for c in failed) and "voice_group=v3" in {c.slice for c in failed}  # the accent's rows sit in every class too
    assert not any(c.slice and c.slice.startswith("voice_group=") and c.slice != "voice_group=v3" for c in failed)
    assert "zero_shot_audio_acc[voice_group=v3] change" in broken.reason
    assert better.challenger["zero_shot_audio_acc"] > broken.challenger["zero_shot_audio_acc"]


def test_every_metric_the_gate_scores_has_its_familys_direction():
    """The family's declared metrics are exactly what its scoring computes: a new metric without a
    direction, or a declared one nobody computes, fails here rather than in a user's gate."""
    from models.families import CAPTION_METRIC
    from models.family import load_family
    from models.gate_scoring import LATENCY_METRIC, SIZE_METRIC

    golden = sample(40, seed=5)
    [scores] = score_models({"m": CentroidModel(sample(100, seed=6))}, golden, PROMPTS, latency_items=2).values()
    declared, computed = set(load_family("imagebind").metric_directions()), set(scores.metrics())
    assert computed <= declared  # every metric scored has a direction
    # Declared but not computed: only the metrics of modalities these rows lack (depth, thermal, imu).
    assert declared - computed == {name for m in ("depth", "thermal", "imu")
                                   for name in (f"zero_shot_{m}_acc", f"{m}_to_image_r1")}
    assert set(load_family("lora").metric_directions()) == {CAPTION_METRIC, LATENCY_METRIC, SIZE_METRIC}

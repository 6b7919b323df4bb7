"""The gate's decision: value bounds always, change checks against a champion with a paired-bootstrap
interval, per-slice checks, direction-aware budgets, explained per check."""

import numpy as np
import pytest

from models.bootstrap import BootstrapConfig, draw_resample_weights, paired_change
from models.gate import HIGHER, LOWER, MetricThreshold, ModelScores, decide
from tests.unit.params_support import policy_at_defaults

N = 400


def scores(accuracy: float, seed: int, latency: float = 10.0, size: float = 1.0, n: int = N) -> ModelScores:
    """Per-row 0/1 scores with exactly `accuracy` right, in a seeded order."""
    right = np.zeros(n)
    right[: int(round(accuracy * n))] = 1.0
    return ModelScores({"acc": np.random.default_rng(seed).permutation(right)},
                       {"p95_latency_ms": latency, "model_size_mb": size})


# Which way each metric is better: what a model family declares for the metrics it computes.
DIRECTIONS = {"acc": HIGHER, "p95_latency_ms": LOWER, "model_size_mb": LOWER}

POLICY = policy_at_defaults({
    "acc": MetricThreshold(min=0.6, max_drop=0.02),
    "p95_latency_ms": MetricThreshold(max=50.0, max_drop=5.0),
    "model_size_mb": MetricThreshold(max=10.0),
}, directions=DIRECTIONS)


def test_first_model_is_judged_on_value_bounds_and_budgets_only():
    decision = decide(scores(0.7, 0), None, POLICY)
    assert decision.passed and {c.kind for c in decision.checks} == {"min", "max"}
    assert "first model" in decision.reason
    over_budget = decide(scores(0.7, 0, latency=80.0, size=12.0), None, POLICY)
    assert {c.name for c in over_budget.failed_checks()} == {"p95_latency_ms max", "model_size_mb max"}


def test_the_same_model_passes_with_a_zero_interval():
    same = scores(0.8, 0)
    decision = decide(same, same, POLICY)
    assert decision.passed
    [change] = [c for c in decision.checks if c.metric == "acc" and c.kind == "change"]
    assert change.observed == 0 and change.interval == (0.0, 0.0) and change.bound == pytest.approx(-0.02)


def test_a_clear_gain_passes_and_a_clear_loss_fails_with_its_interval():
    champion = scores(0.80, 0)
    assert decide(scores(0.92, 1), champion, POLICY).passed
    rejected = decide(scores(0.70, 1), champion, POLICY)
    [failed] = rejected.failed_checks()
    assert failed.name == "acc change" and failed.observed == pytest.approx(-0.10)
    low, high = failed.interval
    assert low < -0.10 < high < 0 and failed.champion == pytest.approx(0.80)
    assert "acc change: -0.1000 (CI" in rejected.reason


def test_a_point_gain_inside_the_noise_does_not_pass_a_strict_threshold():
    """+0.5 points on 400 unpaired-looking rows: the interval reaches well below -0.5 points."""
    decision = decide(scores(0.805, 1), scores(0.80, 0), policy_at_defaults({"acc": MetricThreshold(max_drop=0.005)}, directions=DIRECTIONS))
    [check] = decision.checks
    assert check.observed > 0 and check.interval[0] < -0.005 and not decision.passed


def test_relative_change_and_direction_aware_latency():
    policy = policy_at_defaults({"acc": MetricThreshold(max_drop_rel=0.05),
                         "p95_latency_ms": MetricThreshold(max_drop=5.0, max_drop_rel=0.2)},
                        directions=DIRECTIONS)
    champion = scores(0.80, 0, latency=10.0)
    faster = decide(scores(0.80, 0, latency=4.0), champion, policy)
    assert faster.passed
    slower = decide(scores(0.80, 0, latency=13.0), champion, policy)
    assert [c.name for c in slower.failed_checks()] == ["p95_latency_ms change_rel"]  # +3 ms is within 5 ms, not 20 %
    [rel] = [c for c in slower.checks if c.kind == "change_rel" and c.metric == "p95_latency_ms"]
    assert rel.observed == pytest.approx(-0.3) and rel.interval is None


def test_a_collapsed_slice_is_named_although_the_average_improves():
    voices = np.array(["a", "b", "c", "d"] * (N // 4))
    rank = np.arange(N) // 4  # the row's position within its voice, 0..99
    champion = ModelScores({"acc": (rank < 70).astype(float)})  # 0.7 on every voice
    challenger_rows = np.where(voices == "d", rank < 20, True).astype(float)  # 1.0, but 0.2 on voice d: 0.8 overall
    policy = policy_at_defaults({"acc": MetricThreshold(max_drop=0.01)},
                        slices={"voice": {"acc": MetricThreshold(min=0.3, max_drop=0.1)}}, directions=DIRECTIONS)
    decision = decide(ModelScores({"acc": challenger_rows}), champion, policy, {"voice": voices})
    assert decision.challenger["acc"] == pytest.approx(0.8) and not decision.passed
    assert [c.name for c in decision.failed_checks()] == ["acc[voice=d] min", "acc[voice=d] change"]
    assert "acc[voice=d] change" in decision.reason


def test_small_slices_are_skipped_not_judged():
    groups = {"voice": np.array(["a"] * (N - 2) + ["rare"] * 2)}
    policy = policy_at_defaults({"acc": MetricThreshold(min=0.0)}, slices={"voice": {"acc": MetricThreshold(min=0.99)}},
                        min_slice_rows=5, directions=DIRECTIONS)
    decision = decide(scores(1.0, 0), None, policy, groups)
    assert decision.passed and decision.skipped_slices == ["voice=rare (2 rows)"]


def test_configuration_errors_name_the_bad_entry():
    with pytest.raises(ValueError, match="was not evaluated"):
        decide(ModelScores({}, {"p95_latency_ms": 1.0}), None, policy_at_defaults({"acc": MetricThreshold(min=0.5)}, directions=DIRECTIONS))
    with pytest.raises(ValueError, match="at least one metric"):
        decide(scores(0.5, 0), None, policy_at_defaults({}))
    with pytest.raises(ValueError, match="slice group 'accent'"):
        decide(scores(0.5, 0), None, policy_at_defaults({"acc": MetricThreshold()}, slices={"accent": {"acc": MetricThreshold()}},
                                                directions=DIRECTIONS))
    with pytest.raises(ValueError, match="not the same golden set"):
        decide(scores(0.5, 0), scores(0.5, 0, n=N - 1), POLICY)
    with pytest.raises(ValueError, match="max_drop is an allowed regression"):
        MetricThreshold(max_drop=-0.1)
    with pytest.raises(ValueError, match="'p95_latency_ms' has no direction"):  # never guessed as "higher"
        policy_at_defaults({"p95_latency_ms": MetricThreshold(max_drop=5.0)}, directions={"acc": HIGHER})


def test_a_latency_or_size_threshold_written_without_a_direction_judges_the_right_way_round(tmp_path):
    """params.yaml thresholds carry no direction: the family declares that lower latency and size are
    better, so a faster, smaller challenger passes and a slower, bigger one fails (the bug this pins:
    a default of "higher is better" rejected a challenger 5.8 ms faster than its champion)."""
    import yaml

    from flows.settings import load_settings
    from flows.stage_config import gate_policy
    from tests.conftest import example_params

    raw = example_params()
    raw["gate"]["families"]["imagebind"] = {"thresholds": {"zero_shot_image_acc": {"max_drop": 0.05},
                                                           "p95_latency_ms": {"max": 50.0, "max_drop": 1.0},
                                                           "model_size_mb": {"max_drop_rel": 0.1}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    policy = gate_policy(load_settings(tmp_path / "home", tmp_path / "params.yaml"), "imagebind")

    def model(latency: float, size: float) -> ModelScores:
        right = np.random.default_rng(0).permutation(np.r_[np.ones(300), np.zeros(100)])
        return ModelScores({"zero_shot_image_acc": right}, {"p95_latency_ms": latency, "model_size_mb": size})

    champion = model(latency=26.8, size=10.0)
    faster = decide(model(latency=21.0, size=8.0), champion, policy)
    assert faster.passed, faster.reason
    [latency] = [c for c in faster.checks if c.metric == "p95_latency_ms" and c.kind == "change"]
    assert latency.observed == pytest.approx(5.8) and latency.champion == pytest.approx(26.8)  # +5.8: an improvement
    slower = decide(model(latency=28.0, size=12.0), champion, policy)
    assert {c.name for c in slower.failed_checks()} == {"p95_latency_ms change", "model_size_mb change_rel"}


def test_a_threshold_with_a_direction_or_on_a_metric_the_family_lacks_stops_at_start_up(tmp_path):
    import yaml

    from flows.settings import load_settings
    from tests.conftest import example_params

    for thresholds, message in [({"p95_latency_ms": {"max": 50.0, "higher_is_better": False}}, "declared once by the model family"),
                                ({"p95_latency_msec": {"max": 50.0}}, "'p95_latency_msec' is not a metric of the imagebind family")]:
        raw = example_params()
        raw["gate"]["families"]["imagebind"]["thresholds"] = thresholds
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(Exception, match=message):
            load_settings(tmp_path / "home", tmp_path / "params.yaml")


def test_bootstrap_is_seeded_and_its_interval_covers_the_truth():
    """Paired rows that differ on 10 % of rows: the 90 % interval of the change contains the true
    change in about 90 % of repeated golden sets, and the same seed gives the same interval."""
    config = BootstrapConfig(resamples=1000, confidence=0.9, seed=3)
    weights = draw_resample_weights(200, config)
    assert np.array_equal(weights, draw_resample_weights(200, config)) and (weights.sum(axis=1) == 200).all()
    rng = np.random.default_rng(0)
    covered = 0
    trials = 200
    for _ in range(trials):
        champion = (rng.random(200) < 0.8).astype(float)
        challenger = np.where(rng.random(200) < 0.1, 1 - champion, champion)  # flips ~10 % of rows
        truth = 0.1 * (0.2 - 0.8)  # E[challenger - champion] = 0.1 * (P(0→1) - P(1→0))
        change = paired_change(challenger, champion, weights, 0.9)
        covered += change.low <= truth <= change.high
    assert 0.82 <= covered / trials <= 0.97

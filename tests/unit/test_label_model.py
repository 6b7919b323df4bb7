"""Weak supervision: labelling functions vote, the label model weighs them by their accuracy on human labels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.clean import clean_batch
from features.ingest import ingest_batch
from features.label import ModelVotes, build_labels, build_votes
from features.label_functions import apply_labelling_function, load_labelling_functions, row_dicts
from features.label_model import ABSTAIN, compute_conflicts, evaluate_heldout, fit_label_model
from tests.unit.task_support import DIGITS
from tests.unit.params_support import clean_params, label_model_params, label_params

# The digits example's caption LF, loaded as a user's LF is: by its import path.
(CAPTION_LF,) = load_labelling_functions(["examples.digits.labelling:caption_digit"])
CAPTION = CAPTION_LF.name  # "caption_digit": its vote column

CHAMPION_ACCURACY = 0.85


def synthetic_champion(truth: np.ndarray, sample_ids: list[str], seed: int = 0) -> ModelVotes:
    """Image and audio predictions right 85% of the time (errors uniform over the other classes),
    with a confidence unrelated to being right, so the confidence floor only thins the votes."""
    rng = np.random.default_rng(seed)
    predicted, confidence = {}, {}
    for modality in ("image", "audio"):
        right = rng.random(len(truth)) < CHAMPION_ACCURACY
        wrong = (truth + rng.integers(1, 10, len(truth))) % 10
        predicted[modality] = np.where(right, truth, wrong)
        confidence[modality] = rng.uniform(0.4, 1.0, len(truth))
    return ModelVotes(sample_ids, predicted, confidence)


@pytest.fixture(scope="module")
def demo(demo_batch_factory, tmp_path_factory):
    """Clean rows of a 150-sample demo batch, their true digits and a synthetic champion's votes.

    30% human labels (the demo default is 20%): about 45 checked votes per LF keep the binomial
    noise of an accuracy estimate near 0.05, so "within 0.1 of the truth" is a fair test."""
    source = demo_batch_factory(samples=150, seed=11, label_rate=0.3)
    work = tmp_path_factory.mktemp("label-model")
    rows = clean_batch(ingest_batch(source, work / "raw").batch_dir, work / "clean", clean_params(DIGITS)).rows
    digits = {json.loads(l)["sample_id"]: json.loads(l)["digit"] for l in (source / "_truth.jsonl").read_text().splitlines()}
    truth = np.array([digits[s] for s in rows["sample_id"]])
    return rows, truth, synthetic_champion(truth, list(rows["sample_id"]))


def caption_votes(rows: pd.DataFrame) -> np.ndarray:
    return apply_labelling_function(CAPTION_LF, row_dicts(rows), DIGITS)


def build(rows, model_votes=None, params=label_params()):
    """build_labels for the digits task with its caption LF."""
    return build_labels(rows, DIGITS, model_votes, params, [CAPTION_LF])


def _label_array(labels: pd.DataFrame) -> np.ndarray:
    return labels["label"].fillna(ABSTAIN).to_numpy(dtype=np.int64)


# ---- the label model on its own ------------------------------------------------------------


def test_the_more_accurate_lf_wins_a_disagreement_with_the_naive_bayes_posterior():
    reference = np.array([3, 3, 3, 3, 3, 3, 3, 3, -1])
    votes = np.array([[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 5], [3, 5], [2, 7]])  # LF a: 8/8, LF b: 6/8
    model = fit_label_model(votes, reference, ("a", "b"), 10, label_model_params(prior_accuracy=0.5, prior_strength=2.0))
    np.testing.assert_allclose(model.accuracy, [9 / 10, 7 / 10])
    label, confidence = model.predict(votes[-1:])
    assert label[0] == 2
    w = np.log(np.array([0.9, 0.7]) * 9 / np.array([0.1, 0.3]))
    expected = np.exp(w[0]) / (np.exp(w[0]) + np.exp(w[1]) + 8)  # 8 classes got no vote: score 0
    assert confidence[0] == pytest.approx(expected)


def test_few_checked_votes_are_not_perfect_and_unchecked_lfs_get_the_prior():
    reference = np.array([1, 2, 3, -1, -1])
    votes = np.array([[1, -1], [2, -1], [3, -1], [4, 6], [5, 6]])
    model = fit_label_model(votes, reference, ("lucky", "unchecked"), 10, label_model_params(prior_accuracy=0.7, prior_strength=2.0))
    assert model.accuracy[0] == pytest.approx((3 + 1.4) / (3 + 2))  # 0.88, not 1.0
    assert model.accuracy[1] == pytest.approx(0.7)
    assert list(model.checked) == [3, 0]


def test_a_row_where_every_lf_abstains_stays_unlabelled():
    model = fit_label_model(np.array([[1], [-1]]), np.array([1, -1]), ("a",), 10, label_model_params())
    label, confidence = model.predict(np.array([[-1]]))
    assert label[0] == ABSTAIN and confidence[0] == pytest.approx(0.1)


def test_heldout_accuracy_never_sees_the_held_out_human_label():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 10, 200)
    noise = rng.integers(0, 10, (200, 1))  # an LF that knows nothing
    accuracy, coverage = evaluate_heldout(noise, reference, ("noise",), 10, label_model_params())
    assert coverage == 1.0 and accuracy < 0.2  # leaking the reference would give 1.0
    echo = reference[:, None].copy()  # an LF that is always right is found to be right
    assert evaluate_heldout(echo, reference, ("echo",), 10, label_model_params())[0] == 1.0


def test_conflicts_count_rows_whose_voting_lfs_disagree():
    votes = np.array([[1, 1, -1], [1, 2, -1], [-1, -1, -1], [4, -1, -1], [3, 3, 5]])
    assert list(compute_conflicts(votes)) == [False, True, False, False, True]


def test_votes_outside_the_classes_are_refused_with_their_position():
    with pytest.raises(ValueError, match="LF 'a' voted 12 in row 1"):
        fit_label_model(np.array([[1], [12]]), np.array([1, -1]), ("a",), 10, label_model_params())
    with pytest.raises(ValueError, match=r"LF 'a' voted 3 in row 1; accepted: a class 0..2 or -1"):
        fit_label_model(np.array([[1], [3]]), np.array([1, -1]), ("a",), 3, label_model_params())  # the task's 3 classes bound the votes


# ---- on a demo batch -------------------------------------------------------------------------


def test_label_model_beats_the_caption_lf_alone_and_covers_more(demo):
    rows, truth, champion = demo
    weak_only = rows["label"].isna().to_numpy()
    caption = caption_votes(rows)
    labels, stats = build(rows, champion)
    label = _label_array(labels)
    caption_hits = (caption == truth)[weak_only].mean()  # abstaining on generic captions counts as a miss
    model_hits = (label == truth)[weak_only].mean()
    assert model_hits > caption_hits + 0.05
    _, caption_stats = build(rows)
    assert stats.coverage > caption_stats.coverage
    assert caption_stats.coverage == pytest.approx(((caption != ABSTAIN) | ~weak_only).mean())
    assert (label[weak_only & (label != ABSTAIN)] == truth[weak_only & (label != ABSTAIN)]).mean() > 0.95


def test_lf_accuracy_estimates_are_within_a_tenth_of_the_truth(demo):
    rows, truth, champion = demo
    params = label_params()
    _, stats = build(rows, champion, params)
    votes = build_votes(rows, DIGITS, champion, params.min_model_confidence, [CAPTION_LF])
    for name in (CAPTION, "champion_image", "champion_audio"):
        column = votes.column(name)
        true_accuracy = (column == truth)[column != ABSTAIN].mean()
        assert stats.lfs[name].accuracy == pytest.approx(true_accuracy, abs=0.1), name
        assert stats.lfs[name].checked > 20
    assert stats.lfs["human"].accuracy is None  # the reference is not checked against itself


def test_human_rows_keep_their_label_and_every_row_carries_its_votes(demo):
    rows, truth, champion = demo
    always_wrong = ModelVotes(champion.sample_id, {m: (truth + 1) % 10 for m in champion.predicted},
                              {m: np.ones(len(truth)) for m in champion.confidence})
    labels, stats = build(rows, always_wrong)
    human = rows["label"].notna().to_numpy()
    assert (labels.loc[human, "label_source"] == "human").all()
    assert (labels.loc[human, "label"].to_numpy() == rows.loc[human, "label"].to_numpy()).all()
    assert (labels.loc[human, "label_confidence"] == 1.0).all()
    votes = [json.loads(v) for v in labels["label_votes"]]
    assert all(set(v) == {"human", CAPTION, "champion_image", "champion_audio"} for v in votes)
    assert all(v["champion_image"] == (t + 1) % 10 for v, t in zip(votes, truth))
    assert stats.human + stats.label_model + stats.unlabelled == len(rows)


def test_model_votes_align_by_sample_id_and_unsure_or_missing_votes_abstain(demo):
    rows, truth, champion = demo
    order = np.arange(len(truth))[::-1][:-5]  # reversed, and the first five rows not predicted
    partial = ModelVotes([champion.sample_id[i] for i in order],
                         {m: p[order] for m, p in champion.predicted.items()},
                         {m: c[order] for m, c in champion.confidence.items()})
    votes = build_votes(rows, DIGITS, partial, min_model_confidence=0.5)
    image = votes.column("champion_image")
    assert (image[:5] == ABSTAIN).all()
    sure = champion.confidence["image"][5:] >= 0.5
    assert (image[5:][sure] == champion.predicted["image"][5:][sure]).all()
    assert (image[5:][~sure] == ABSTAIN).all()


def test_stats_are_flat_floats_for_mlflow_and_a_nested_summary(demo):
    rows, truth, champion = demo
    _, stats = build(rows, champion)
    metrics = stats.to_metrics()
    assert all(isinstance(v, float) for v in metrics.values())
    for key in ("label_coverage", "label_conflict_rate", "label_heldout_accuracy", "lf_caption_digit_accuracy",
                "lf_champion_audio_coverage", "lf_champion_image_conflict_rate"):
        assert key in metrics
    assert 0.0 < metrics["label_conflict_rate"] < 0.5
    assert metrics["label_heldout_accuracy"] > 0.9
    summary = stats.to_summary()
    assert summary["lfs"][CAPTION]["coverage"] == metrics["lf_caption_digit_coverage"]
    json.dumps(summary)  # the run summary is JSON

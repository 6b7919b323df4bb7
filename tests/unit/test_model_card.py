"""The model card a version's registry page shows: the verdict (a rejected version's card leads with
why), each check with its interval, the golden-set metrics per slice, the training window, data
versions and plots; it fits the registry's 5000 characters and does not change when rewritten."""

from __future__ import annotations

import re

import numpy as np

from models.gate import HIGHER, LOWER, MetricThreshold, ModelScores, decide
from models.model_card import (
    CARD_MAX_CHARS,
    artifact_url,
    card_lineage,
    render_model_card,
    render_run_note,
    run_page,
    version_page,
)
from tests.unit.params_support import policy_at_defaults

N = 200
DIRECTIONS = {"acc": HIGHER, "p95_latency_ms": LOWER}
# what registration writes on a version (flows.model_stages.stage_register)
REGISTERED = {"training_batches": "batch-001,batch-002,batch-003", "golden_version": "golden/golden-ab12@md5-9",
              "training_run": "run123", "family": "imagebind", "data_version": "lake/inputs@md5-1",
              "data.inputs": "lake/inputs@md5-1", "data.features": "lake/features@md5-2", "flow_run": "flow-7",
              "feature_service": "training"}
PLOTS = ["plots/confusion_image.png", "plots/recall_at_k.png"]


def scores(accuracy: float, seed: int, n: int = N) -> ModelScores:
    right = np.zeros(n)
    right[: int(round(accuracy * n))] = 1.0
    return ModelScores({"acc": np.random.default_rng(seed).permutation(right)}, {"p95_latency_ms": 10.0})


def policy(**slices: dict[str, MetricThreshold]):
    return policy_at_defaults({"acc": MetricThreshold(min=0.5, max_drop=0.02), "p95_latency_ms": MetricThreshold(max=50.0)},
                              slices=slices, min_slice_rows=5, directions=DIRECTIONS)


def groups(n: int = N, classes: int = 4) -> dict[str, np.ndarray]:
    return {"class": np.array([f"c{k % classes}" for k in range(n)]), "accent": np.array(["rare"] * 3 + ["us"] * (n - 3))}


def outside_code(markdown: str) -> str:
    return re.sub(r"`[^`]*`", "", markdown)


def card_of(decision, champion: str | None = "4", champion_after: str | None = "5", tags=REGISTERED) -> str:
    decision.lineage = {"challenger_version": "5", "champion_version": champion, "golden_version": "golden/golden-ab12@md5-9",
                        "golden_rows": N, "decision_artifact": "gate/decision-v5.json", "champion_after": champion_after}
    record = decision.to_dict()
    return render_model_card("flywheel-imagebind", "5", card_lineage(tags, record), record, PLOTS,
                             run_page("1", "run123"))


def test_a_passed_card_states_the_verdict_each_check_with_its_interval_and_the_slices():
    decision = decide(scores(0.9, 1), scores(0.8, 0), policy(**{"class": {"acc": MetricThreshold(min=0.1, max_drop=0.5)}}),
                      groups())
    card = card_of(decision)
    assert decision.passed and card.startswith("# flywheel-imagebind v5\n")
    assert "**PASSED** by the gate against `@champion` v4 on golden set `golden/golden-ab12@md5-9` (200 rows)" in card
    assert "Promoted: the gate made this version `@champion`." in card and "Why it was rejected" not in card
    [change] = [c for c in decision.checks if c.name == "acc change"]
    low, high = change.interval
    assert f"| acc | change | {change.observed:+.4f} | -0.0200 | {low:+.4f} … {high:+.4f} | pass |" in card
    assert "| p95_latency_ms | max | 10.0000 | 50.0000 |  | pass |" in card
    assert "| acc | 0.9000 | 0.8000 |" in card  # the headline metrics, this version beside the champion
    for k in range(4):  # one row per class slice: the version's value, the champion's, the change and its interval
        value = decision.slice_metrics[f"class=c{k}"]["acc"]
        [slice_change] = [c for c in decision.checks if c.slice == f"class=c{k}" and c.kind == "change"]
        a, b = slice_change.interval
        assert (f"| class=c{k} | acc | {value:.4f} | {slice_change.champion:.4f} | "
                f"{slice_change.observed:+.4f} ({a:+.4f} … {b:+.4f}) | pass |") in card
    assert "too few golden rows" not in card.lower()
    assert "@" not in outside_code(card)  # MLflow's Markdown would link "@champion" to a GitHub user


def test_the_training_window_data_versions_plots_and_run_are_on_the_card():
    card = card_of(decide(scores(0.9, 1), None, policy(), groups()), champion=None, champion_after="5")
    assert "- training window: 3 batches: `batch-001`, `batch-002`, `batch-003`" in card
    assert "- data version inputs: `lake/inputs@md5-1`" in card
    assert "- data version features: `lake/features@md5-2`" in card
    assert "data_version" not in card  # the inputs' version under its older name: said once, not twice
    assert "- MLflow training run: [`run123`](#/experiments/1/runs/run123)" in card
    assert "- flywheel run: `flow-7`" in card and "- family: `imagebind`" in card
    assert f"![confusion_image.png]({artifact_url('run123', 'plots/confusion_image.png')})" in card
    assert artifact_url("run123", "plots/confusion_image.png") == "get-artifact?path=plots%2Fconfusion_image.png&run_uuid=run123"
    assert "| feature_service | `training` |" in card  # lineage without a line of its own is still there


def test_a_rejected_card_leads_with_the_failing_checks_and_lists_failing_slices_first():
    slices = {"class": {"acc": MetricThreshold(min=0.1, max_drop=0.05)}}
    # the challenger is right nowhere on class c3, where the champion was always right
    champion, challenger = scores(0.8, 0), scores(0.8, 0)
    c3 = groups()["class"] == "c3"
    champion.per_row["acc"][c3], challenger.per_row["acc"][c3] = 1.0, 0.0
    decision = decide(challenger, champion, policy(**slices), groups())
    card = card_of(decision, champion_after="4")
    assert not decision.passed and "**REJECTED**" in card and "Promoted" not in card
    why = card.index("## Why it was rejected")
    assert why < card.index("## Gate checks") < card.index("## Golden-set metrics per slice")
    for check in decision.failed_checks():
        assert f"- {check.explain()}" in card[why:card.index("## Gate checks")]
    slice_rows = [line for line in card.splitlines() if line.startswith("| class=")]
    assert slice_rows[0].startswith("| class=c3 | acc | 0.0000 | 1.0000 | -1.0000") and "**FAIL** (min, change)" in slice_rows[0]
    assert all("| pass |" in row for row in slice_rows[1:])
    assert "@" not in outside_code(card)


def test_a_card_with_no_champion_has_value_bounds_only():
    decision = decide(scores(0.9, 1), None, policy(accent={"acc": MetricThreshold(min=0.1)}), groups())
    card = card_of(decision, champion=None, champion_after="5")
    assert "against no champion (first model: value bounds only)" in card
    assert "| metric | this version |\n" in card and "| acc | 0.9000 |\n" in card  # no champion column
    assert "| change |" not in card
    assert f"| accent=us | acc | {decision.slice_metrics['accent=us']['acc']:.4f} | — |  | pass |" in card
    assert "Too few golden rows to judge: accent=rare (3 rows)" in card


def test_a_slice_bounded_only_by_a_change_still_shows_its_value():
    decision = decide(scores(0.9, 1), scores(0.8, 0), policy(**{"class": {"acc": MetricThreshold(max_drop=0.5)}}), groups())
    card = card_of(decision)
    value = decision.slice_metrics["class=c0"]["acc"]
    assert {c.kind for c in decision.checks if c.slice} == {"change"}  # no value check to read it from
    assert f"| class=c0 | acc | {value:.4f} |" in card


def test_a_version_not_gated_yet_says_so_with_its_lineage():
    card = render_model_card("flywheel-imagebind", "5", card_lineage(REGISTERED, None), None, PLOTS, run_page("1", "run123"))
    assert "**NOT GATED YET**" in card and "PASSED" not in card and "REJECTED" not in card
    assert "- training window: 3 batches" in card and "![recall_at_k.png]" in card


def test_the_registrys_bookkeeping_tags_do_not_change_the_card():
    """Rewritten after promotion (a re-run of the gate), the card is the same text."""
    decision = decide(scores(0.9, 1), scores(0.8, 0), policy(), groups())
    later = {**REGISTERED, "gate.passed": "true", "gate.decided_at": "2031-01-01T00:00:00+00:00",
             "lineage.golden_rows": "200", "promotion.at": "2031-01-01T00:00:01+00:00", "promotion.by": "someone",
             "mlflow.source": "x"}
    assert card_of(decision, tags=later) == card_of(decision)


def test_a_large_task_fits_the_registrys_description_keeping_failing_slices():
    classes = 300
    champion, challenger = scores(0.8, 0, n=classes * 6), scores(0.8, 0, n=classes * 6)
    column = groups(classes * 6, classes)["class"]
    champion.per_row["acc"][column == "c7"], challenger.per_row["acc"][column == "c7"] = 1.0, 0.0
    decision = decide(challenger, champion, policy(**{"class": {"acc": MetricThreshold(min=0.01, max_drop=0.9)}}),
                      {"class": column})
    tags = {**REGISTERED, "training_batches": ",".join(f"batch-{k:04d}" for k in range(500))}
    card = card_of(decision, tags=tags)
    assert len(card) <= CARD_MAX_CHARS
    assert "| class=c7 | acc | 0.0000 |" in card and "**FAIL** (min, change)" in card
    assert "more rows, left out to fit the registry's 5000 characters: `gate/decision-v5.json`" in card
    assert "and 488 more (tag `training_batches`)" in card
    assert card.index("## Why it was rejected") < card.index("## Gate checks")


def test_the_training_runs_note_names_the_run_family_data_and_links_the_version():
    lineage = card_lineage(REGISTERED, None)
    note = render_run_note("flywheel-imagebind", "5", lineage)
    assert note.startswith("Trained by flywheel run `flow-7`, family `imagebind`; registered as "
                           f"[flywheel-imagebind v5]({version_page('flywheel-imagebind', '5')})")
    assert version_page("flywheel-imagebind", "5") == "#/models/flywheel-imagebind/versions/5"
    assert "- data version features: `lake/features@md5-2`" in note
    assert note.splitlines()[0].endswith("whose description is its model card. Gate: not run yet.")
    decision = decide(scores(0.4, 1), None, policy(), groups()).to_dict()
    gated = render_run_note("flywheel-imagebind", "5", card_lineage(REGISTERED, decision), decision)
    assert gated.splitlines()[0].endswith("Gate: **rejected**.")  # the verdict before the UI's fold
    assert "The gate's reason: acc min: 0.4000 vs bound 0.5000" in gated


def test_every_headline_check_is_a_row_and_value_checks_say_why_they_have_no_interval():
    decision = decide(scores(0.9, 1), scores(0.8, 0), policy(), groups())
    card = card_of(decision)
    rows = [line for line in card[card.index("## Gate checks"):card.index("## Golden-set metrics")].splitlines()
            if line.startswith("| acc") or line.startswith("| p95")]
    headline = [c for c in decision.checks if c.slice is None]
    assert len(rows) == len(headline)
    for check, row in zip(headline, rows):
        assert row.startswith(f"| {check.metric} | {check.kind} |")
        interval = f"| {check.interval[0]:+.4f} … {check.interval[1]:+.4f} |" if check.interval else " |  | "
        assert interval in row, (check.name, row)
    assert "Value checks (min, max) hold the version's point value on the golden set to the bound: they have no interval" in card


def test_the_card_links_the_prefect_flow_run_and_names_the_data_docs_page_of_the_run_that_trained_it():
    decision = decide(scores(0.9, 1), scores(0.8, 0), policy(), groups())
    pages = {"prefect_flow_run": "http://127.0.0.1:4200/flow-runs/flow-run/abc",
             "data_docs_page": "/home/.flywheel/gx/uncommitted/data_docs/local_site/validations/clean_rows/flow-7/t/b.html"}
    card = card_of(decision, tags={**REGISTERED, **pages})
    assert ("- flywheel run: `flow-7` ([Prefect flow run](http://127.0.0.1:4200/flow-runs/flow-run/abc)); "
            "`flywheel lineage flow-7` prints its whole chain") in card
    assert f"- GX validation of its batch (Data Docs page): `{pages['data_docs_page']}`" in card
    assert "| prefect_flow_run |" not in card and "| data_docs_page |" not in card  # said once, in their lines


def test_a_table_whose_rows_were_all_left_out_leaves_no_empty_table():
    """Seen on a real card: 'More lineage' kept its header with no row under it."""
    classes = 100
    decision = decide(scores(0.9, 1, n=classes * 6), scores(0.8, 0, n=classes * 6),
                      policy(**{"class": {"acc": MetricThreshold(min=0.0, max_drop=1.0)}}), groups(classes * 6, classes))
    card = card_of(decision, tags={**REGISTERED, **{f"extra_{k}": "x" * 150 for k in range(5)}})
    assert len(card) <= CARD_MAX_CHARS
    lineage = card[card.index("## More lineage"):]
    assert "| key | value |" not in lineage
    assert "… 6 rows, left out to fit the registry's 5000 characters: the version's tags" in lineage


def test_run_pages_reads_the_flow_run_and_data_docs_page_from_the_runs_summary(tmp_path):
    import json
    from types import SimpleNamespace

    from flows.model_cards import run_pages
    from flows.state_paths import StatePaths

    settings = SimpleNamespace(paths=StatePaths(tmp_path))
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "summary.json").write_text(json.dumps(
        {"run_id": "r1", "links": {"prefect_flow_run": "http://p/flow-runs/flow-run/1"},
         "stages": {"validate": {"data_docs_page": "/gx/page.html"}}}))
    assert run_pages(settings, "r1") == {"prefect_flow_run": "http://p/flow-runs/flow-run/1", "data_docs_page": "/gx/page.html"}
    assert run_pages(settings, "missing") == {} and run_pages(settings, None) == {}

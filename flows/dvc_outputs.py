"""What `flywheel stage NAME --outputs DIR` writes for DVC once the stage ran: small, deterministic files.

FLYWHEEL_HOME is a DVC repository of its own (the lake), so the project's `dvc.yaml` cannot declare
outputs inside it. Each DVC stage's out is instead `DIR/<stage>.json`: the stage's cache key (a hash of
its code, its params, its upstream keys and what else it read: `flows/stage_cache.py`), so it changes
exactly when the stage's result does, and a re-run with nothing changed rewrites the same bytes (no run
ids, timestamps or seconds). Beside it, from the numbers the stage recorded in the run summary (the same
numbers MLflow and the summary show): `<stage>.metrics.json` and, per plot, `<stage>.<plot>/<series>.csv`.

Every stage of a batch after training re-loads train, register and gate from their records, keyed by
the lake's data versions; those are pinned to the ones `train.json` names (`pinned_versions`), so a
drift check of an earlier batch re-run after later batches landed re-loads that batch's model instead
of training on today's window.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from features.atomic import atomic_write_text

if TYPE_CHECKING:
    from flows.run_record import RunRecord
    from flows.settings import Settings
    from flows.stages import Stage

@dataclass(frozen=True)
class DvcPlot:
    """A plot `dvc plots show` draws: one CSV per series in `dvc-stages/<batch>/<stage>.<name>/`, drawn with
    DVC's `template` (confusion, linear, bar_horizontal) from columns `x` and `y`."""

    name: str
    template: str
    x: str
    y: str


@dataclass(frozen=True)
class DvcSpec:
    """What `dvc.yaml` declares for the stage on each landing batch (`flows/dvc_pipeline.py`), and what
    `flywheel stage NAME --outputs DIR` writes there from what the stage recorded (`flows/dvc_outputs.py`):
    always `<stage>.json` (its cache key: the DVC out the next stage depends on), its metrics file
    `<stage>.metrics.json` when `metrics` is given, and its plots."""

    declared: bool = True  # False: no DVC stage (react: alerts and retraining are the loop's doing, not an output)
    metrics: Callable[["Settings", dict[str, Any], str], dict[str, Any]] | None = None  # (settings, summary, stage) → metrics
    plots: tuple[DvcPlot, ...] = ()
    plot_series: Callable[["Settings", dict[str, Any], str], dict[str, dict[str, list[dict[str, Any]]]]] | None = None  # plot → series → rows
    golden: bool = False  # reads the golden batch (task.golden): a dependency of the DVC stage


DVC_STAGES_DIR = "dvc-stages"  # the project's folder of per-batch DVC files: dvc-stages/<batch>/
TRAIN_PLOTS = (DvcPlot("confusion", "confusion", x="actual", y="predicted"),  # one series per modality
               DvcPlot("recall_at_k", "linear", x="k", y="recall"))  # one series per query→gallery pair
MONITOR_PLOTS = (DvcPlot("drift", "bar_horizontal", x="score", y="feature"),)  # data drift score per feature


def out_path(folder: Path, stage: str) -> Path:
    return folder / f"{stage}.json"


def metrics_path(folder: Path, stage: str) -> Path:
    return folder / f"{stage}.metrics.json"


def plot_path(folder: Path, stage: str, plot: DvcPlot) -> Path:
    return folder / f"{stage}.{plot.name}"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"


# ---- the metrics and plots of each stage, from the run summary ----------------------------------------------


def row_metrics(settings: "Settings", summary: dict[str, Any], stage: str) -> dict[str, Any]:
    """A data stage's row counts, and the rows it quarantined per reason."""
    counts = summary["stages"].get(stage) or {}
    return {"rows_in": counts.get("rows_in"), "rows_out": counts.get("rows_out"),
            "rows_quarantined": counts.get("rows_quarantined", 0), "quarantined": dict(counts.get("reasons") or {})}


def train_metrics(settings: "Settings", summary: dict[str, Any], stage: str) -> dict[str, Any]:
    """The golden-set metrics as the training run logged them to MLflow, and the rows trained on."""
    train = summary["train"]
    return {**train["metrics"], "rows": train["rows"], "labelled_rows": train["labelled_rows"]}


def gate_metrics(settings: "Settings", summary: dict[str, Any], stage: str) -> dict[str, Any]:
    """The decision and the scores behind it (the champion's only when there was one)."""
    gate = summary["gate"]
    return {"passed": bool(gate["passed"]), "challenger": gate["challenger"],
            **({"champion": gate["champion"]} if gate.get("champion") else {})}


def monitor_metrics(settings: "Settings", summary: dict[str, Any], stage: str) -> dict[str, Any]:
    """Whether the batch drifted, and the share of its features whose distribution drifted (absent without
    a reference window: the champion was trained on this batch only)."""
    monitor = summary["monitor"]
    drift = (monitor.get("checks") or {}).get("data_drift") or {}
    found = {"drift_detected": bool(monitor.get("drift_detected", False)),
             "drifted_checks": len(monitor.get("drifted_checks") or [])}
    if "drifted_share" in drift:
        found["drifted_share"] = drift["drifted_share"]
    return found


def monitor_plots(settings: "Settings", summary: dict[str, Any], stage: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per feature, the drift score against its threshold."""
    items = (((summary["monitor"].get("checks") or {}).get("data_drift") or {}).get("items")) or {}
    rows = [{"feature": name, "score": item["score"], "threshold": item["threshold"], "drifted": item["drifted"]}
            for name, item in sorted(items.items()) if isinstance(item, dict) and "score" in item]
    return {"drift": {"data_drift": rows}}


def train_plots(settings: "Settings", summary: dict[str, Any], stage: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The trained model on the golden set, as the MLflow run's plots show it: zero-shot confusion rows
    (actual, predicted class name) per modality, and recall@k per query→gallery pair."""
    import mlflow

    from flows.families import configured_family
    from flows.model_stages import golden_name, load_golden_folder
    from models.family import family_named

    wrapper = mlflow.pyfunc.load_model(summary["train"]["model_uri"]).unwrap_python_model()
    configured = configured_family(settings)
    family = family_named(getattr(wrapper, "family", None) or configured.name, [configured])
    plots = getattr(family, "golden_plots", None)  # optional member of the protocol: a family without it has none
    if plots is None:
        return {"confusion": {}, "recall_at_k": {"none": []}}
    golden = load_golden_folder(settings.paths.golden / golden_name(settings))
    names = settings.task.classes
    predicted, curves = plots(wrapper.model, golden, settings.task)
    confusion = {name: [{"actual": names[int(a)], "predicted": names[int(p)]} for a, p in zip(golden.label, labels)]
                 for name, labels in predicted.items()}
    recall = {pair: [{"k": k + 1, "recall": round(float(v), 6)} for k, v in enumerate(curve)] for pair, curve in curves.items()}
    return {"confusion": confusion, "recall_at_k": recall or {"none": []}}


# ---- writing them -----------------------------------------------------------------------------------------


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys([*columns, *(k for row in rows for k in row)])),
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def write_stage_outputs(settings: "Settings", stage: "Stage", record: "RunRecord", batch: str, folder: Path) -> list[Path]:
    """The stage's DVC files under `folder` (dvc-stages/<batch>), from the run that just ran it; returns them."""
    from dataclasses import asdict

    summary = json.loads(json.dumps(asdict(record), default=str))
    entry = summary["cache"].get(stage.name)
    if entry is None:
        raise ValueError(f"stage {stage.name} has no cache entry in run {record.run_id}: it did not run")
    folder.mkdir(parents=True, exist_ok=True)
    content: dict[str, Any] = {"stage": stage.name, "batch": batch, "key": entry["key"]}
    if stage.name in ("version", "train"):  # what the lake held: train.json pins it for the stages after training
        content["data_versions"] = summary["data_versions"]
    written = [out_path(folder, stage.name)]
    atomic_write_text(written[0], _json(content))
    spec = stage.dvc
    if spec.metrics is not None:
        written.append(metrics_path(folder, stage.name))
        atomic_write_text(written[-1], _json(spec.metrics(settings, summary, stage.name)))
    if spec.plots:
        series = spec.plot_series(settings, summary, stage.name) if spec.plot_series else {}
        for plot in spec.plots:
            where = plot_path(folder, stage.name, plot)
            shutil.rmtree(where, ignore_errors=True)  # a series the stage no longer has must not linger
            where.mkdir(parents=True)
            for name, rows in sorted((series.get(plot.name) or {"none": []}).items()):
                atomic_write_text(where / f"{name}.csv", _csv(rows, (plot.x, plot.y)))
            written.append(where)
    return written


def pinned_versions(table: tuple["Stage", ...], name: str, folder: Path) -> dict[str, str] | None:
    """For a stage after train: the data versions `folder/train.json` names (None before train, or when
    no train.json exists yet: then the lake's current versions are taken, as a plain run does)."""
    names = [s.name for s in table]
    if "train" not in names or names.index(name) <= names.index("train"):
        return None
    path = out_path(folder, "train")
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("data_versions") or None


def stage_call(versions: dict[str, str] | None) -> Callable[..., Any]:
    """The driver's `call(name, fn, *args)` for `flywheel stage`: each stage function called directly with
    library chatter kept quiet (Feast resets the warning filters when first imported); the version stage
    answers `versions` instead of the lake's current ones when given."""
    from features.env import quiet_library_output
    from flows.data_stages import stage_version_data

    def call(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        if versions is not None and fn is stage_version_data:
            return dict(versions)
        quiet_library_output()
        try:
            return fn(*args)
        finally:
            quiet_library_output()

    return call

"""The Evidently dashboard of a model's project, defined in code: which metric series each panel plots.

A panel plots series of metric values recorded in the project's snapshots, picked by Evidently
metric type and labels (`column`, `value_type`, …). A panel whose metric no snapshot holds yet
shows "no data" until a check records it. The prediction-mix panels plot one series per class, named
by the task's class names (passed in). Pure: building the panels reads and writes nothing
(see `monitoring.workspace` for putting them in a workspace).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evidently.sdk.models import DashboardPanelPlot, PanelMetric
from evidently.sdk.panels import bar_plot_panel, line_plot_panel

from features.transform import AUDIO_FEATURES, CAPTION_FEATURES, IMAGE_FEATURES

DRIFTED_COLUMNS = "DriftedColumnsCount"  # the dataset-level result of DataDriftPreset (count and share)
VALUE_DRIFT = "ValueDrift"  # one per column: a p-value below 1,000 reference rows, a distance above
MODALITY_FEATURES: dict[str, tuple[str, ...]] = {"image": IMAGE_FEATURES, "audio": AUDIO_FEATURES, "caption": CAPTION_FEATURES}

# Embedding drift per modality, as the drift checks record it: one line per modality, e.g.
# "image": PanelMetric(legend="image embedding", metric="<type>", metric_labels={"column": "<column>"}).
# Until then each modality's panel plots the drift scores of that modality's tabular features.
EMBEDDING_DRIFT: dict[str, PanelMetric] = {}

# The inputs a champion classifies, each a column of the prediction snapshot (model_drift.build_prediction_report):
# monitoring.observations.MODALITY_KEYS for ImageBind, and the lora family's captions ("text").
PREDICTED_MODALITIES = ("image", "audio", "text", "depth", "thermal", "imu")
CLASS_SHARE = "CategoryCount"  # per modality column and class name: that class's share of the modality's predictions
MAX_CLASS_SERIES = 40  # more classes: one series whose legend Evidently fills in, not a named series per class

# What the data-quality panels expect the checks to record (Evidently's own metrics).
ROWS = PanelMetric(legend="rows", metric="RowCount")
MISSING_SHARE = PanelMetric(legend="missing values", metric="DatasetMissingValueCount", metric_labels={"value_type": "share"})

DRIFT_TAB, MODALITY_TAB, PREDICTION_TAB, QUALITY_TAB = "Drift", "Modalities", "Predictions", "Data quality"


@dataclass(frozen=True)
class TabPanel:
    """A panel and the tab it belongs to; (tab, panel title) identifies it when the dashboard is synced."""

    tab: str
    panel: DashboardPanelPlot


def drift_share(legend: str = "drifted share") -> PanelMetric:
    return PanelMetric(legend=legend, metric=DRIFTED_COLUMNS, metric_labels={"value_type": "share"})


def modality_series(modality: str) -> list[PanelMetric]:
    """Embedding drift of the modality when recorded, then the drift score of each of its features."""
    features = [PanelMetric(legend=column, metric=VALUE_DRIFT, metric_labels={"column": column})
                for column in MODALITY_FEATURES[modality]]
    embedding = EMBEDDING_DRIFT.get(modality)
    return [embedding, *features] if embedding is not None else features


def class_share(modality: str, name: str) -> PanelMetric:
    """The share of class `name` among `modality`'s predictions, as the prediction snapshot records it."""
    # Evidently 0.7.23 stores each metric parameter as str(value): CategoryCount's categories list included.
    return PanelMetric(legend=name, metric=CLASS_SHARE,
                       metric_labels={"column": modality, "categories": str([name]), "value_type": "share"})


def prediction_mix_series(modality: str, classes: Sequence[str]) -> list[PanelMetric]:
    """One series per class, in the task's order (its legend is the class name); past MAX_CLASS_SERIES, one
    series for all, whose legend is each point's `categories` label."""
    if len(classes) > MAX_CLASS_SERIES:
        return [PanelMetric(legend="{{categories}}", metric=CLASS_SHARE,
                            metric_labels={"column": modality, "value_type": "share"})]
    return [class_share(modality, name) for name in classes]


def build_dashboard_panels(classes: Sequence[str]) -> list[TabPanel]:
    """Every panel of a model's project, in display order; `classes`: the task's class names."""
    # No counter panels: Evidently 0.7.23's counter shows "no value" for 0, the usual no-drift result.
    panels = [
        TabPanel(DRIFT_TAB, line_plot_panel("Drift share over time", [drift_share()],
                                            description="share of features whose drift test failed, one point per monitored batch")),
        TabPanel(DRIFT_TAB, bar_plot_panel(
            "Drifted features per batch", description="how many features drifted against the champion's training window",
            values=[PanelMetric(legend="drifted features", metric=DRIFTED_COLUMNS, metric_labels={"value_type": "count"})])),
    ]
    for modality in MODALITY_FEATURES:
        panels.append(TabPanel(MODALITY_TAB, line_plot_panel(
            f"{modality.capitalize()} drift", modality_series(modality), size="half",
            description="drift score per feature (p-value: small means drift; distance above 1,000 reference rows: large means drift)")))
    for modality in PREDICTED_MODALITIES:
        panels.append(TabPanel(PREDICTION_TAB, bar_plot_panel(
            f"{modality.capitalize()} prediction mix", prediction_mix_series(modality, classes), size="half", stacked=True,
            description=f"share of each class among the champion's {modality} predictions, one bar per monitored "
                        f"window (no data: the champion does not classify {modality} inputs)")))
    panels += [
        TabPanel(QUALITY_TAB, bar_plot_panel("Rows per batch", [ROWS], size="half", description="rows the checks saw")),
        TabPanel(QUALITY_TAB, line_plot_panel("Missing values", [MISSING_SHARE], size="half",
                                              description="share of missing cells per batch")),
    ]
    return panels

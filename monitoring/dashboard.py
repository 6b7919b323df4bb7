"""The Evidently dashboard of a model's project, defined in code: which metric series each panel plots.

A panel plots series of metric values recorded in the project's snapshots, picked by Evidently
metric type and labels (`column`, `value_type`, …). A panel whose metric no snapshot holds yet
shows "no data" until a check records it. Pure: building the panels reads and writes nothing
(see `monitoring.workspace` for putting them in a workspace).
"""

from __future__ import annotations

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

# What the prediction-mix and data-quality panels expect the checks to record (Evidently's own metrics).
PREDICTION_COLUMN = "predicted_label"  # UniqueValueCount on this column: the share of each predicted class
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


def build_dashboard_panels() -> list[TabPanel]:
    """Every panel of a model's project, in display order."""
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
    panels += [
        TabPanel(PREDICTION_TAB, bar_plot_panel(
            "Prediction mix", stacked=True, description=f"share of each predicted class ({PREDICTION_COLUMN})",
            values=[PanelMetric(legend="class {{label}}", metric="UniqueValueCount",
                                metric_labels={"column": PREDICTION_COLUMN, "value_type": "share"})])),
        TabPanel(QUALITY_TAB, bar_plot_panel("Rows per batch", [ROWS], size="half", description="rows the checks saw")),
        TabPanel(QUALITY_TAB, line_plot_panel("Missing values", [MISSING_SHARE], size="half",
                                              description="share of missing cells per batch")),
    ]
    return panels

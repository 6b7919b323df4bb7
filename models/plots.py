"""Evaluation plots for a training run: matplotlib figures, no file or tracker I/O.

- `confusion_matrix_figure`: zero-shot predictions of one modality against the true class
- `recall_curves_figure`: recall@k, k = 1..10, per retrieval pair (models.retrieval)
- `embedding_map_figure`: the joint space projected to 2-D by PCA, colour = class,
  marker = modality (t-SNE would take tens of seconds on 2 cores; PCA takes milliseconds)
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and in tests; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix  # noqa: E402

MODALITY_MARKERS = {"image": "o", "audio": "^", "text": "*"}  # text prompts drawn large, on top
MAP_MAX_POINTS_PER_MODALITY = 500  # keeps the map legible and the PNG small; rows taken in order


def confusion_matrix_figure(label: np.ndarray, predicted: np.ndarray, n_classes: int, title: str) -> Figure:
    """Counts of (true class, predicted class); the diagonal is the accuracy's numerator."""
    matrix = confusion_matrix(label, predicted, labels=np.arange(n_classes))
    figure, axis = plt.subplots(figsize=(5.5, 5))
    ConfusionMatrixDisplay(matrix, display_labels=np.arange(n_classes)).plot(ax=axis, colorbar=False, cmap="Blues")
    accuracy = float(np.mean(label == predicted)) if len(label) else float("nan")
    axis.set_title(f"{title} (accuracy {accuracy:.1%})")
    figure.tight_layout()
    return figure


def recall_curves_figure(curves: dict[str, np.ndarray], title: str) -> Figure:
    """One line per retrieval pair ("audio→text": recall@k for k = 1..len(curve))."""
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for name, curve in curves.items():
        axis.plot(np.arange(1, len(curve) + 1), curve, marker="o", markersize=3, label=name)
    axis.set(xlabel="k", ylabel="recall@k (same class in top k)", title=title, ylim=(0, 1.02))
    axis.set_xticks(np.arange(1, max((len(c) for c in curves.values()), default=1) + 1))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure


def embedding_map_figure(embedding: dict[str, np.ndarray], label: dict[str, np.ndarray], title: str) -> Figure:
    """PCA of all modalities together (one shared projection), coloured by class, marker by modality."""
    names = [name for name in embedding if len(embedding[name])]
    rows = {name: slice(0, MAP_MAX_POINTS_PER_MODALITY) for name in names}
    stacked = np.concatenate([embedding[name][rows[name]] for name in names])  # (ΣN, D)
    figure, axis = plt.subplots(figsize=(6.5, 5.5))
    if len(stacked) >= 2:
        points = PCA(n_components=2, random_state=0).fit_transform(stacked)  # (ΣN, 2)
        start = 0
        colours = plt.get_cmap("tab10")
        for name in names:
            classes = label[name][rows[name]]
            chunk = points[start : start + len(classes)]
            start += len(classes)
            axis.scatter(chunk[:, 0], chunk[:, 1], c=[colours(int(k) % 10) for k in classes],
                         marker=MODALITY_MARKERS.get(name, "s"), s=160 if name == "text" else 14,
                         edgecolors="black" if name == "text" else "none", linewidths=0.6, alpha=0.8,
                         zorder=3 if name == "text" else 2)
            axis.scatter([], [], color="grey", marker=MODALITY_MARKERS.get(name, "s"), label=name)  # legend: shape only
        for k in range(10):
            axis.scatter([], [], color=colours(k), marker="s", label=f"class {k}")
    axis.set(xlabel="PC 1", ylabel="PC 2", title=title)
    axis.legend(fontsize=7, ncol=2, loc="best", markerscale=0.8)
    figure.tight_layout()
    return figure

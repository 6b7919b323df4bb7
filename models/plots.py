"""Evaluation plots for a training run: matplotlib figures, no file or tracker I/O.

- `confusion_matrix_figure`: one modality's predictions (zero-shot, or the caption classifier's)
  against the true class, the axes labelled with the task's class names
- `recall_curves_figure`: recall@k, k = 1..10, per retrieval pair (models.retrieval)
- `embedding_map_figure`: the joint space projected to 2-D by PCA, colour = class (named in the
  legend), marker = modality (t-SNE would take tens of seconds on 2 cores; PCA takes milliseconds)

Classes arrive as indices with the task's class names beside them (`class_names[k]` names index k).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and in tests; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix  # noqa: E402

MODALITY_MARKERS = {"image": "o", "audio": "^", "depth": "v", "thermal": "D", "imu": "P",
                    "text": "*"}  # text prompts drawn large, on top
MAP_MAX_POINTS_PER_MODALITY = 500  # keeps the map legible and the PNG small; rows taken in order
MAP_LEGEND_MAX_CLASSES = 20  # more classes: the legend names the first ones and counts the rest
CONFUSION_VALUES_MAX_CLASSES = 20  # more classes: the cells are too small to print their counts in
TICK_LABEL_MAX_CHARS = 24  # a longer class name is cut (with "…") on the axes and in the legend
QUALITATIVE_COLOURS = (("tab10", 10), ("tab20", 20))  # distinct colours while the classes fit, else a continuous map


def class_colours(n_classes: int) -> list[tuple[float, float, float, float]]:
    """One RGBA colour per class: a qualitative palette with enough colours, else evenly spaced on `turbo`."""
    for name, size in QUALITATIVE_COLOURS:
        if n_classes <= size:
            return [plt.get_cmap(name)(k) for k in range(n_classes)]
    return [tuple(c) for c in plt.get_cmap("turbo")(np.linspace(0.0, 1.0, n_classes))]


def _short(name: str) -> str:
    return name if len(name) <= TICK_LABEL_MAX_CHARS else name[: TICK_LABEL_MAX_CHARS - 1] + "…"


def _check_classes(class_names: Sequence[str], **labels: np.ndarray) -> list[str]:
    """The class names as strings; a label array holding an index with no name is refused."""
    if isinstance(class_names, str) or len(class_names) == 0:
        raise ValueError(f"class_names must be a non-empty sequence of class names, got {class_names!r:.80}")
    n = len(class_names)
    for what, values in labels.items():
        values = np.asarray(values)
        outside = np.unique(values[(values < 0) | (values >= n)]).astype(int).tolist()
        if outside:
            raise ValueError(f"{what} holds class indices {outside[:10]} outside 0..{n - 1} "
                             f"({n} class names given)")
    return [str(name) for name in class_names]


def confusion_matrix_figure(label: np.ndarray, predicted: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Counts of (true class, predicted class), axes labelled with the class names (`class_names[k]` is
    class index k); the diagonal is the accuracy's numerator."""
    names = _check_classes(class_names, label=label, predicted=predicted)
    n = len(names)
    matrix = confusion_matrix(label, predicted, labels=np.arange(n))
    side = min(5.0 + 0.3 * max(0, n - 10), 16.0)  # cells stay readable as classes are added
    figure, axis = plt.subplots(figsize=(side + 0.5, side))
    ConfusionMatrixDisplay(matrix, display_labels=[_short(name) for name in names]).plot(
        ax=axis, colorbar=False, cmap="Blues", include_values=n <= CONFUSION_VALUES_MAX_CLASSES)
    if n > 10 or max(len(name) for name in names) > 3:  # long or many names would overlap on the x axis
        plt.setp(axis.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    accuracy = float(np.mean(np.asarray(label) == np.asarray(predicted))) if len(label) else float("nan")
    figure.suptitle(f"{title} (accuracy {accuracy:.1%})", fontsize=10)  # the figure's width, not the axis's
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


def embedding_map_figure(embedding: dict[str, np.ndarray], label: dict[str, np.ndarray],
                         class_names: Sequence[str], title: str) -> Figure:
    """PCA of all modalities together (one shared projection), coloured by class, marker by modality;
    the legend names the modalities and the classes (`class_names[k]` is class index k)."""
    modalities = [name for name in embedding if len(embedding[name])]
    names = _check_classes(class_names, **{f"label[{m!r}]": label[m] for m in modalities})
    colours = class_colours(len(names))
    rows = {name: slice(0, MAP_MAX_POINTS_PER_MODALITY) for name in modalities}
    stacked = np.concatenate([embedding[name][rows[name]] for name in modalities]) if modalities else np.zeros((0, 2))
    figure, axis = plt.subplots(figsize=(8.5, 5.5))
    if len(stacked) >= 2:
        points = PCA(n_components=2, random_state=0).fit_transform(stacked)  # (ΣN, 2)
        start = 0
        for name in modalities:
            classes = label[name][rows[name]]
            chunk = points[start : start + len(classes)]
            start += len(classes)
            axis.scatter(chunk[:, 0], chunk[:, 1], c=[colours[int(k)] for k in classes],
                         marker=MODALITY_MARKERS.get(name, "s"), s=160 if name == "text" else 14,
                         edgecolors="black" if name == "text" else "none", linewidths=0.6, alpha=0.8,
                         zorder=3 if name == "text" else 2)
            axis.scatter([], [], color="grey", marker=MODALITY_MARKERS.get(name, "s"), label=name)  # legend: shape only
        shown = names if len(names) <= MAP_LEGEND_MAX_CLASSES else names[: MAP_LEGEND_MAX_CLASSES - 1]
        for k, class_name in enumerate(shown):
            axis.scatter([], [], color=colours[k], marker="s", label=_short(class_name))
        if len(shown) < len(names):
            axis.plot([], [], " ", label=f"… {len(names) - len(shown)} more classes")
        axis.legend(fontsize=7, ncol=1 if len(modalities) + len(shown) <= 16 else 2, markerscale=0.8,
                    loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the map, never over its points
    axis.set(xlabel="PC 1", ylabel="PC 2", title=title)
    figure.tight_layout()
    return figure

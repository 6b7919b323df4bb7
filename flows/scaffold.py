"""`flywheel init DIR`: a new project folder with a params.yaml to fill in, a landing folder and a README.

The params file holds what a project must set: a commented `task:` section, the one thing no default
can supply, and the gate's starting thresholds (the gate needs at least one). Every other entry keeps
its default from flows/settings.py (declared there once); `flywheel params --defaults` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from flows.params_text import SECTION_NOTES

TASK_TEMPLATE = """\
# flywheel project. Fill in the task below and uncomment it (remove the leading "# "). Every entry
# not written here takes its default from flows/settings.py: `flywheel params --defaults` prints them
# all with their reasons, `flywheel params` what this file makes of them. Write here only what you change.
#
# task:                            # what the model learns: the one section without defaults
#   classes: [cat, dog]            # class names, in the order of the model's scores (two or more); manifest labels name them
#   prompts: "a photo of a {label}"  # the text standing for each class in zero-shot scoring: a template with {label},
#                                  # or a mapping: {cat: ["a photo of a cat", "a kitten"], dog: "a photo of a dog"}
#   golden: data/golden            # a landing batch (folder with manifest.jsonl), every row labelled: the gate's
#                                  # fixed test set; relative to this file's folder
#   slices: []                     # manifest fields judged per value besides each class, e.g. [camera]
#   languages: null                # accepted caption languages, e.g. [en, de]; null: no language check
#   image_channels: 1              # 1: grayscale; 3: RGB
"""

# The gate refuses to judge without a threshold; these are starting points to tune, not defaults, for the
# default family (gate.families.imagebind): the zero-shot image accuracy on the golden batch, the per-item
# latency budget and the weights' size.
STARTING_GATE_THRESHOLDS: dict[str, dict[str, float]] = {
    "zero_shot_image_acc": {"min": 0.6, "max_drop": 0.03},
    "p95_latency_ms": {"max": 50.0, "max_drop": 10.0},
    "model_size_mb": {"max": 20.0, "max_drop_rel": 0.5},
}

README_TEMPLATE = """\
# {name}

A flywheel project. What goes where:

- `data/landing/<batch>/`: each landing batch is a folder holding `manifest.jsonl` and the files it
  names by relative path. One JSON object per line: `sample_id`, `captured_at` (ISO 8601), the row's
  `image`, `audio` (paths) and `caption` (text), and `label` (a class name, or null when unlabelled);
  any other field (`camera`, `site`, ...) is kept as metadata and can be a slice.
- `data/golden/`: the golden batch, a landing batch whose every row is labelled. The gate measures every
  challenger on it; keep it fixed.
- `params.yaml`: fill in the `task:` section (classes, prompts, golden, slices, languages,
  image_channels) and uncomment it; everything else has a working default (`flywheel params --defaults`).

Then run the lifecycle on a batch:

    flywheel run --params {params} --home {home} --source {source}

`flywheel ui --params {params} --home {home}` prints the commands that open the MLflow, Prefect and
Evidently UIs; `flywheel serve-model` serves the champion.
"""


class FolderNotEmpty(ValueError):
    """`flywheel init` into a folder that already holds something, without --force."""


@dataclass(frozen=True)
class Scaffold:
    """What `write_scaffold` wrote."""

    params: Path  # params.yaml, the task section still commented
    landing: Path  # data/landing/, empty
    readme: Path


def build_params_text() -> str:
    """params.yaml for a new project: the task template and the gate's starting thresholds, nothing else."""
    gate = yaml.safe_dump({"gate": {"families": {"imagebind": {"thresholds": STARTING_GATE_THRESHOLDS}}}}, sort_keys=False)
    return f"{TASK_TEMPLATE}\n# {SECTION_NOTES['gate']}\n{gate}"


def write_scaffold(folder: Path, force: bool = False) -> Scaffold:
    """Write a new project into `folder` (created if missing). A folder that holds anything is refused
    unless `force`, which then replaces only params.yaml and README.md."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FolderNotEmpty(f"{folder} is a file, not a folder; choose a new or empty folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        held = sorted(p.name for p in folder.iterdir())
        raise FolderNotEmpty(f"{folder} is not empty (holds {held[:5]}{' …' if len(held) > 5 else ''}); choose a new "
                             "or empty folder, or pass --force to write params.yaml and README.md into it")
    landing = folder / "data" / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    params = folder / "params.yaml"
    params.write_text(build_params_text(), encoding="utf-8")
    readme = folder / "README.md"
    readme.write_text(README_TEMPLATE.format(name=folder.resolve().name, params=folder / "params.yaml",
                                             home=folder / ".flywheel", source=landing / "batch-001"),
                      encoding="utf-8")
    return Scaffold(params=params, landing=landing, readme=readme)

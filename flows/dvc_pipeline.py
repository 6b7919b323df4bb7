"""`dvc.yaml` from the stage table: one DVC stage per lifecycle stage per landing batch.

Each runs `flywheel stage NAME --batch BATCH --outputs dvc-stages/BATCH`, and declares as deps the
stage's code modules (those inside the project), the out of the stage before it, the landing folder
(the first stage) and the golden batch (the stages that score on it); as params the params.yaml
entries the table says it reads; as out its `dvc-stages/BATCH/NAME.json` (its cache key); and its
metrics and plots (`flows/dvc_outputs.py`). Batches run in order, as `flywheel run` on each in turn:
training uses every batch ingested so far, so a batch's first stage depends on the previous batch's
last model stage (its gate). A DVC foreach cannot say that, so the stages are written out one by one.

The rest of an existing dvc.yaml is kept as written (a project's own stages, such as an example's
`golden` and `demo_data`); stages running `flywheel stage` or `flywheel run` are replaced.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from flows.dvc_outputs import DVC_STAGES_DIR, metrics_path, out_path, plot_path
from flows.stages import MODEL, Stage

if TYPE_CHECKING:
    from flows.settings import Settings

LANDING_DIR = "data/landing"
GENERATED_COMMANDS = ("flywheel stage ", "flywheel run ")  # stages of an older dvc.yaml that these replace
HEADER = """\
# Written by `flywheel dvc-yaml` from the stage table (flows/stages.py): one DVC stage per lifecycle stage
# per landing batch, each running `flywheel stage NAME --batch BATCH`. Change the table or the batches and
# run `flywheel dvc-yaml` again; other stages here (a project's own, e.g. its demo batches) are kept.
#   dvc repro                          # the lifecycle on each batch, re-running only what changed
#   dvc exp run -S train.lr=0.004      # an experiment: dvc exp show and the MLflow UI list it
#   dvc plots show                     # confusion, recall@k and drift plots
"""


def dvc_stage_name(stage: str, batch: str) -> str:
    """DVC allows only letters, numbers, `_` and `-` in a stage name: `train_batch-001`."""
    return f"{stage}_{batch}"


def _command(stage: dict[str, Any]) -> str:
    return str(stage.get("do", stage).get("cmd", ""))


def kept_stages(existing: dict[str, Any]) -> dict[str, Any]:
    """An existing dvc.yaml's stages that are not the lifecycle's (those run `flywheel stage` or `flywheel run`)."""
    stages = (existing or {}).get("stages") or {}
    return {name: stage for name, stage in stages.items() if not _command(stage).startswith(GENERATED_COMMANDS)}


def default_batches(kept: dict[str, Any], root: Path) -> list[str]:
    """The landing batches the kept stages write (a foreach whose out is `data/landing/${key}`), else the
    landing folders present under `root`."""
    batches: list[str] = []
    for stage in kept.values():
        outs = [str(o) for o in stage.get("do", {}).get("outs", [])]
        if "foreach" in stage and any(o.startswith(f"{LANDING_DIR}/${{") for o in outs):
            batches.extend(str(key) for key in stage["foreach"])
    if batches:
        return list(dict.fromkeys(batches))
    landing = root / LANDING_DIR
    return sorted(p.name for p in landing.iterdir() if (p / "manifest.jsonl").is_file()) if landing.is_dir() else []


def _relative(path: Path, root: Path) -> str | None:
    """`path` relative to the project, or None when it lies outside (DVC tracks a project's own files)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


# Where params.yaml's defaults are declared (the settings, the gate's and training's params models): a dep of
# every stage, since a changed default changes what a stage computes as a written value would.
DEFAULTS_MODULES = ("flows.settings", "flows.gate_params", "flows.train_params")


def code_files(modules: tuple[str, ...], root: Path, owner: str) -> list[str]:
    """The files of `modules` (a package: its folder) that lie inside the project; `owner` names who declared them."""
    files = []
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ValueError(f"{owner}: code module {module!r} not found; is the project's package on the path?")
        origin = Path(spec.origin)
        found = _relative(origin.parent if origin.name == "__init__.py" else origin, root)
        if found is not None:
            files.append(found)
    return sorted(set(files))


def declared_params(stage: Stage, params: dict[str, Any]) -> list[str]:
    """The stage's params.yaml entries that the file holds (`section.key`, else its section): DVC refuses
    to track a key the file lacks, and one left at its default changes only by being written there."""
    found = []
    for entry in stage.params:
        section, _, key = entry.partition(".")
        if section in params and (not key or key in (params[section] or {})):
            found.append(entry)
        elif section in params:
            found.append(section)
    if stage.is_extra and "stages" in params:
        found.append("stages")
    return list(dict.fromkeys(found))


def _dvc_stage(stage: Stage, batch: str, previous: str | None, root: Path, params: dict[str, Any],
               params_file: str, golden: str | None) -> dict[str, Any]:
    folder = Path(DVC_STAGES_DIR) / batch
    deps = [previous] if previous else []
    if stage.name == "ingest":  # always the first stage: a project's stage comes after a named one
        deps.append(f"{LANDING_DIR}/{batch}")
    if stage.dvc.golden and golden:
        deps.append(golden)
    deps.extend(code_files(stage.code, root, f"stage {stage.name}"))
    deps.extend(code_files(DEFAULTS_MODULES, root, "the params defaults"))
    entry: dict[str, Any] = {"cmd": f"flywheel stage {stage.name} --batch {batch} --outputs {folder.as_posix()}",
                             "deps": list(dict.fromkeys(deps))}
    names = declared_params(stage, params)
    if names:
        entry["params"] = names if params_file == "params.yaml" else [{params_file: names}]
    entry["outs"] = [out_path(folder, stage.name).as_posix()]
    if stage.dvc.metrics is not None:
        entry["metrics"] = [{metrics_path(folder, stage.name).as_posix(): {"cache": False}}]
    if stage.dvc.plots:
        entry["plots"] = [{plot_path(folder, stage.name, plot).as_posix():
                           {"cache": False, "template": plot.template, "x": plot.x, "y": plot.y}}
                          for plot in stage.dvc.plots]
    return entry


def lifecycle_stages(settings: "Settings", table: tuple[Stage, ...], batches: list[str], root: Path,
                     params_path: Path) -> dict[str, Any]:
    """The DVC stages of `table` on each of `batches`, in order; `params_path`: the params file the stages read."""
    params = yaml.safe_load(params_path.read_text()) or {}
    try:  # not resolved: a symlinked params.yaml is read by DVC where it is
        params_file = params_path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError as err:
        raise ValueError(f"the params file {params_path} lies outside the project {root}: DVC tracks the params "
                         "of a file inside it") from err
    golden = _relative(settings.task.golden, root) if settings.task.golden is not None else None
    declared = [s for s in table if s.dvc.declared]
    ends_batch = [s.name for s in declared if s.part == MODEL][-1:] or [declared[-1].name]  # the next batch waits for it
    stages: dict[str, Any] = {}
    previous_batch_end: str | None = None
    for batch in batches:
        previous = previous_batch_end
        for stage in declared:
            stages[dvc_stage_name(stage.name, batch)] = _dvc_stage(stage, batch, previous, root, params, params_file,
                                                                   golden)
            previous = out_path(Path(DVC_STAGES_DIR) / batch, stage.name).as_posix()
            if stage.name == ends_batch[0]:
                previous_batch_end = previous
    return stages


def dvc_yaml_text(settings: "Settings", table: tuple[Stage, ...], root: Path, params_path: Path,
                  batches: list[str] | None = None, existing: dict[str, Any] | None = None) -> str:
    """The whole dvc.yaml: the kept stages of `existing`, then the lifecycle's on `batches` (default: see
    `default_batches`)."""
    kept = kept_stages(existing or {})
    chosen = batches if batches else default_batches(kept, root)
    if not chosen:
        raise ValueError(f"no landing batches: none under {root / LANDING_DIR} and no stage writes one; "
                         "name them with --batch")
    bad = [b for b in chosen if not b or set(b) - set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")]
    if bad:
        raise ValueError(f"batch names {bad} have characters DVC refuses in a stage name; use letters, numbers, _ and -")
    document = {"stages": {**kept, **lifecycle_stages(settings, table, chosen, root, params_path)}}
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=120)

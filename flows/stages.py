"""The lifecycle as one declared table of stages: everything else about a stage is derived from it.

Each `Stage` says what the stage is: the step that runs it (`flows/steps.py`), the params.yaml entries it
reads, the modules whose source is its code version, how often a driver retries it, the row it adds to
the run summary, and what `dvc.yaml` declares for it (outs, metrics, plots). From this one list:

- the drivers run the steps in order (`flows.pipeline.run_table`: `flywheel run --plain` calls them
  directly; the Prefect flow runs each as a task, retried as declared here);
- the cache keys hash the declared code and params (`flows.stage_cache`);
- the run kinds are slices of it (a retrain is the table from `version` on, with no batch; an ingest is
  the table without the model stages; a drift check is `monitor` and `react`);
- `flywheel stage NAME` runs the table up to NAME, and `flywheel dvc-yaml` writes one DVC stage per entry.

A project adds its own stages by import path, without touching the core:

    stages:
      extra:
        - after: validate
          fn: mypkg.stages:dedupe_by_metadata
          params: {fields: [source, device]}

An extra stage is `fn(rows, context) -> None | DataFrame | StageResult | dict` (see `ExtraStageContext`);
it is cached like any stage, keyed by its module's source, its own params and the stage before it.
"""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from flows.dvc_outputs import DvcSpec

if TYPE_CHECKING:
    import pandas as pd

    from flows.settings import Settings

DATA, MODEL, WATCH = "data", "model", "watch"  # the three parts of the lifecycle a run kind picks from


@dataclass(frozen=True)
class Stage:
    name: str
    step: Callable[..., None]  # step(ctx: flows.steps.RunContext): runs the stage (or re-loads its record)
    part: str  # DATA, MODEL or WATCH
    params: tuple[str, ...] = ()  # params.yaml entries it reads: a section, or `section.key`
    code: tuple[str, ...] = ()  # modules (or packages) whose source is its code version
    retries: int = 0  # a driver's retries after a transient error (the Prefect task's); data stages never retry
    summary: Callable[[dict[str, Any]], str] | None = None  # its row in the summary's model table
    dvc: DvcSpec = DvcSpec()
    rejects_batch: bool = False  # may refuse the whole batch (BatchRejected) once its clean rows exist
    extra: Mapping[str, Any] = field(default_factory=dict)  # a project's stage: fn, after, params

    @property
    def is_extra(self) -> bool:
        return bool(self.extra)


@dataclass(frozen=True)
class StageResult:
    """What an extra stage may return: the rows that go on (None: all of them), why each dropped row was
    dropped (sample_id → detail; a dropped row without one gets a generic detail), and notes for the summary."""

    rows: "pd.DataFrame | None" = None
    reasons: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtraStageContext:
    """What an extra stage is given besides the rows in flight (None after the data stages)."""

    name: str  # the stage's name in the table and the summary
    params: Mapping[str, Any]  # its own `params:` from stages.extra
    batch_id: str | None
    run_id: str
    settings: "Settings"  # read-only: the task, the paths, every params section
    summary: Mapping[str, Any]  # the run summary so far (read-only)


def _table() -> tuple[Stage, ...]:
    from flows import dvc_outputs as out
    from flows import steps
    from flows.run_notes import gate_note, monitor_note, register_note, train_note

    rows = DvcSpec(metrics=out.row_metrics)
    return (
        Stage("ingest", steps.ingest, DATA, code=("features.ingest", "features.manifest"), dvc=rows),
        # Clean also builds the transform's statistics and model inputs from what it decodes: `transform:` is its param.
        Stage("clean", steps.clean, DATA, ("clean", "transform", "task.classes", "task.image_channels"),
              ("features.clean", "features.clean_row", "features.decode", "features.phash", "features.transform",
               "models.inputs", "models.transforms", "models.fbank", "flows.data_stages"),
              dvc=rows),
        Stage("validate", steps.validate, DATA, ("validate", "task.classes", "task.languages"),
              ("features.validate", "features.expectations", "features.reference", "flows.data_stages"),
              rejects_batch=True, dvc=rows),
        Stage("transform", steps.transform, DATA, ("transform", "task.image_channels"),
              ("features.transform", "features.store", "models.inputs", "flows.data_stages"), rejects_batch=True,
              dvc=rows),
        Stage("label", steps.label, DATA, ("label", "task.classes"),
              ("features.label", "features.label_model", "features.review", "flows.data_stages"), rejects_batch=True,
              dvc=rows),
        Stage("version", steps.version, DATA, code=("features.lake_versioning", "flows.data_stages")),
        # The golden batch is keyed by its content (its DVC version, in the training run), its path by the task.
        Stage("train", steps.train, MODEL,
              ("train", "transform", "task", "label.review_threshold", "clean.sample_rate", "clean.silence_db",
               "registry.model_name"),
              ("models.train", "models.imagebind", "models.losses", "models.audio_augment", "models.evaluate", "models.text",
               "models.artifacts", "models.lora", "models.lora_family", "models.pyfunc", "models.tracking",
               "models.family", "flows.families", "flows.model_stages", "flows.lora_stages"),
              summary=train_note, dvc=DvcSpec(metrics=out.train_metrics, plots=out.TRAIN_PLOTS, plot_series=out.train_plots,
                                            golden=True)),
        Stage("register", steps.register, MODEL, ("registry",), ("models.registry", "flows.exactly_once"), retries=2,
              summary=register_note),
        Stage("gate", steps.gate, MODEL, ("gate", "registry", "task"),
              ("models.gate", "models.gate_scoring", "models.bootstrap", "models.family", "models.lora_family",
               "flows.exactly_once"),
              retries=1, summary=gate_note, dvc=DvcSpec(metrics=out.gate_metrics, golden=True)),
        Stage("monitor", steps.monitor, WATCH, ("monitor", "registry", "task"), ("flows.monitor_stage", "monitoring"),
              summary=monitor_note, dvc=DvcSpec(metrics=out.monitor_metrics, plots=out.MONITOR_PLOTS,
                                              plot_series=out.monitor_plots)),
        Stage("react", steps.react, WATCH, ("alerts", "retrain", "registry"),
              ("flows.loop", "monitoring.alerts", "monitoring.alert_delivery"), dvc=DvcSpec(declared=False)),
    )


@lru_cache(maxsize=None)
def built_in_stages() -> tuple[Stage, ...]:
    """flywheel's own stages, in lifecycle order. Rows are in flight from clean through label; after version
    the training window is fixed, so a project's stage placed later may report but not drop rows."""
    return _table()


BUILT_IN_NAMES = ("ingest", "clean", "validate", "transform", "label", "version", "train", "register", "gate",
                  "monitor", "react")


def import_stage_function(path: str, where: str) -> Callable[..., Any]:
    """`package.module:function` → the function; an unusable path stops start-up naming `where`."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{where}: {path!r} is not an import path; write it as package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{where}: cannot import {module_name!r} ({err}); is the project's package on the path?") from err
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise ValueError(f"{where}: {module_name} has no function {attribute!r}")
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError as err:
        raise ValueError(f"{where}: {path} must accept (rows, context): {err}") from err
    return fn


def build_table(extras: list[Mapping[str, Any]] | tuple[Mapping[str, Any], ...] = ()) -> tuple[Stage, ...]:
    """The built-in table with a project's stages (params.yaml `stages.extra`) inserted where they say;
    a bad entry stops start-up naming it."""
    from flows import steps

    table = list(built_in_stages())
    for i, entry in enumerate(extras):
        where = f"stages.extra[{i}]"
        after, path = entry.get("after"), entry.get("fn")
        fn = import_stage_function(str(path), where)
        name = entry.get("name") or path.partition(":")[2]
        names = [stage.name for stage in table]
        if name in names:
            raise ValueError(f"{where}: a stage named {name!r} exists already; give it another `name:`")
        if after not in names:
            raise ValueError(f"{where}: after {after!r} names no stage; stages are {names}")
        if after == "react":
            raise ValueError(f"{where}: nothing runs after react (the loop's reaction ends a run); choose an earlier stage")
        before = table[names.index(after)]
        from flows.dvc_outputs import row_metrics

        stage = Stage(name, steps.extra_stage, before.part, code=(fn.__module__,),
                      dvc=DvcSpec(metrics=row_metrics if before.part == DATA else None),
                      extra=MappingProxyType({"fn": fn, "path": path, "after": after,
                                              "params": dict(entry.get("params") or {})}))
        at = names.index(after) + 1
        while at < len(table) and table[at].is_extra and table[at].extra["after"] == after:
            at += 1  # several after one stage run in the order written
        table.insert(at, stage)
    return tuple(table)


_TABLES: dict[str, tuple[Stage, ...]] = {}


def stage_table(settings: "Settings") -> tuple[Stage, ...]:
    """The project's table: flywheel's stages with params.yaml `stages.extra` inserted (built once per process)."""
    extras = [entry.model_dump() for entry in settings.params.stages.extra]
    # A project's code behind a built-in stage is part of that stage's code version: editing a labelling
    # function relabels, as editing flywheel's own label model would.
    project_code = {"label": _modules(settings.params.label.functions)}
    marker = json.dumps([extras, project_code], sort_keys=True, default=str)
    if marker not in _TABLES:
        _TABLES[marker] = tuple(replace(stage, code=(*stage.code, *project_code.get(stage.name, ())))
                                for stage in build_table(extras))
    return _TABLES[marker]


def _modules(paths: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The modules of `module:function` import paths, each once, in order."""
    return tuple(dict.fromkeys(path.partition(":")[0].strip() for path in paths))


def stage_named(table: tuple[Stage, ...], name: str) -> Stage:
    for stage in table:
        if stage.name == name:
            return stage
    raise ValueError(f"no stage {name!r}; stages are {[s.name for s in table]}")


def lifecycle(table: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """`flywheel run`: every stage."""
    return table


def ingest_only(table: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """`flywheel ingest`: the data stages, then the drift check and the reaction; no training."""
    return tuple(s for s in table if s.part != MODEL)


def from_training(table: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """A retrain: the table from `version` on (the window's current versions, no new batch), to the gate."""
    start = [s.name for s in table].index("version")
    return tuple(s for s in table[start:] if s.part != WATCH)


def watch_only(table: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """A drift check of an ingested batch: monitor and react."""
    return tuple(s for s in table if s.part == WATCH)


def up_to(table: tuple[Stage, ...], name: str) -> tuple[Stage, ...]:
    """`flywheel stage NAME`: the table up to and including NAME (earlier stages are re-loaded from their records)."""
    stage_named(table, name)
    names = [s.name for s in table]
    return table[: names.index(name) + 1]


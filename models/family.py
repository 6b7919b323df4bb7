"""The model-family protocol, and how a family is found: by name (entry point) or by import path.

A model family is one object that the lifecycle asks for everything family-specific: how to train a
model, how to score one on the golden set for the gate (and which way each metric is better), how the
champion votes when labelling, what the served model takes and answers, and what monitoring observes.
No core module branches on a family's name; it calls these members.

A family is found by `load_family(spec)`:

- a name registered in the entry-point group `flywheel.families` (a plug-in package declares
  `[project.entry-points."flywheel.families"] probe = "flywheel_probe:LinearProbeFamily"`; flywheel's own
  `imagebind` and `lora` are declared the same way in its pyproject.toml), or
- an import path `package.module:Attribute` (params.yaml `train.family: mypkg.family:MyFamily`).

The attribute is a family object, or a class called without arguments to make one. A saved model names
its family (`.family` on its pyfunc wrapper, from the model folder's config), and loading a registered
version finds the family by that name here.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "flywheel.families"
# flywheel's own families, also declared as entry points in pyproject.toml. This table only covers an
# install whose metadata predates those entry points (an editable install made from an older pyproject).
BUILT_IN_FAMILIES: dict[str, str] = {"imagebind": "flows.families.imagebind:ImageBindFamily",
                                     "lora": "flows.families.lora:LoraFamily"}


@dataclass(frozen=True)
class TrainRequest:
    """What the train stage hands a family's `train`."""

    settings: Any  # flows.settings.Settings: params.yaml, the task, the state paths, the tracking URI
    run_name: str  # the flow run; the MLflow run is named after it
    label_metrics: dict[str, float] | None = None  # the label stage's metrics, logged on the run too
    data_version: str | None = None  # the lake's `lake/inputs@md5`, logged as the run's dataset input
    checkpoint_dir: Path | None = None  # per-epoch checkpoints a re-run resumes from (None: no checkpoints)


@dataclass(frozen=True)
class TrainOutcome:
    """What training produced: the MLflow run and its logged model, the golden-set metrics, the window."""

    mlflow_run_id: str
    model_uri: str
    metrics: dict[str, float]
    training_batches: list[str]
    rows: int
    labelled_rows: int
    seconds: float
    golden_version: str
    golden_excluded: int = 0  # window rows with a golden row's content, kept out of training


@dataclass(frozen=True)
class GoldenScores:
    """A family's gate scoring of the compared models on the golden set."""

    scores: dict[str, Any]  # role ("challenger", "champion") -> models.gate.ModelScores
    groups: dict[str, Any]  # slice name ("class", a task.slices field) -> (N,) value of each judged row
    rows: int  # golden rows judged


@runtime_checkable
class ModelFamily(Protocol):
    """One model family. Every member receives the objects the built-in families receive."""

    name: str  # the family's name: `gate.families.<name>`, the registered model `flywheel-<name>`, saved configs

    def metric_directions(self) -> Mapping[str, str]:
        """metric -> models.gate.HIGHER or LOWER: every metric `score_golden` computes and which way is better.
        params.yaml thresholds name these; a gated metric missing here stops start-up."""

    def owns(self, model: object) -> bool:
        """True if `model` (a loaded registered version's `.model`) is one of this family's."""

    def train(self, request: TrainRequest) -> TrainOutcome:
        """Train on the current window, evaluate on the golden set, log the run and the model (an MLflow
        pyfunc whose wrapper keeps `.model`, `.task` and `.family`) to MLflow."""

    def score_golden(self, models: dict[str, Any], golden: Any, settings: Any) -> GoldenScores:
        """Score the challenger (and champion) on the same golden rows (`golden`: models.evaluate.EvalData):
        per-row correctness of each metric, p95 latency measured together, size."""

    def labelling_votes(self, model: Any, shards: Iterable[Any], task: Any) -> Any:
        """The champion's votes on a batch's model inputs (`shards`: models.inputs.ModelInputs, one at a
        time) as features.label.ModelVotes, one column per modality it reads."""

    def serving_spec(self, model: Any, task: Any, lake: Callable[[], Iterable[tuple[str, Any]]]) -> Any:
        """What the served model takes and answers: models.serving.spec.ServingSpec. `lake()` iterates the
        lake's (batch_id, ModelInputs) for a search index (called only by a family that searches)."""

    def observations(self, model: Any, task: Any) -> Callable[[Any, Any, Any], Any]:
        """How monitoring sees a window through the champion: `(features, inputs, labels) -> MonitorData`."""

    def skipped_checks(self, model: Any) -> dict[str, dict[str, Any]]:
        """Monitoring checks that do not apply to this model, each `{"status": "skipped", ...}` with a reason."""

    def train_cache_inputs(self, settings: Any, data_versions: dict[str, str]) -> dict[str, Any]:
        """Values besides the data versions that decide what training produces (train's cache key)."""


def is_import_path(spec: str) -> bool:
    return ":" in spec


def _instantiate(target: Any, spec: str) -> ModelFamily:
    try:
        family = target() if isinstance(target, type) else target
    except TypeError as err:
        raise TypeError(f"model family {spec!r}: the class {target.__name__} must be callable without arguments "
                        f"({err}); or name a family object") from err
    missing = [m for m in ("name", *_MEMBERS) if not hasattr(family, m)]
    if missing:
        raise TypeError(f"model family {spec!r} ({type(family).__name__}) lacks {missing}; a family implements "
                        f"models.family.ModelFamily: name, {', '.join(_MEMBERS)}")
    return family


_MEMBERS = ("metric_directions", "owns", "train", "score_golden", "labelling_votes", "serving_spec", "observations",
            "skipped_checks", "train_cache_inputs")


def _import(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"model family {path!r}: cannot import module {module_name!r} ({err})") from err
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"model family {path!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def registered_families() -> dict[str, str]:
    """Family name -> import path: the entry points of `flywheel.families`, over the built-in table."""
    found = dict(BUILT_IN_FAMILIES)
    found.update({ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)})
    return found


@lru_cache(maxsize=None)
def load_family(spec: str) -> ModelFamily:
    """The family `spec` names: a registered name, or an import path `package.module:Attribute`.
    ValueError naming the registered families and the import-path form when neither finds one."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a model family is a registered name or an import path module:Attribute, got {spec!r}")
    if is_import_path(spec):
        return _instantiate(_import(spec), spec)
    registered = registered_families()
    if spec not in registered:
        raise ValueError(f"unknown model family {spec!r}; registered families (entry-point group "
                         f"{ENTRY_POINT_GROUP!r}): {sorted(registered)}; or name one by import path "
                         "`package.module:Attribute`")
    family = _instantiate(_import(registered[spec]), spec)
    if family.name != spec:
        raise ValueError(f"the entry point {spec!r} of {ENTRY_POINT_GROUP!r} gives a family named {family.name!r}; "
                         "register a family under its own name")
    return family


def family_named(name: str, known: Iterable[ModelFamily] = ()) -> ModelFamily:
    """The family called `name`: one of `known` (e.g. the configured `train.family`, which may have been
    given by import path) or a registered one."""
    for family in known:
        if family.name == name:
            return family
    return load_family(name)


def family_of(model: object, known: Iterable[ModelFamily] = ()) -> ModelFamily:
    """The family that owns a loaded model, for a model whose wrapper names none: `known` first, then every
    registered family (one whose plug-in fails to import is skipped, with a warning)."""
    candidates = list(known)
    for name in registered_families():
        try:
            candidates.append(load_family(name))
        except (ValueError, TypeError) as err:
            log.warning("model family %r is registered but unusable: %s", name, err)
    for family in candidates:
        if family.owns(model):
            return family
    raise TypeError(f"{type(model).__name__} belongs to no model family; families tried: "
                    f"{sorted({f.name for f in candidates})}")

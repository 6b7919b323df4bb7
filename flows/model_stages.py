"""The model stages: train, register, gate, monitor, and the champion's votes for labelling."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.clean import clean_batch
from features.ingest import ingest_batch, list_ingested_batches
from features.io import save_json
from flows.model_cards import write_model_card
from flows.settings import Settings
from flows.stage_config import clean_params, feast_services, gate_policy, input_spec, registry_for
from models.family import ModelFamily, TrainOutcome, TrainRequest  # noqa: F401 (TrainOutcome: the stages return it)
from models.gate import GateDecision
from models.inputs import ModelInputs, has_model_inputs, iter_model_inputs, load_clean_inputs, load_model_inputs, save_model_inputs

log = logging.getLogger(__name__)


def champion_votes(settings: Settings, batch_id: str):
    """The champion's votes on this batch (its family's `labelling_votes`: ImageBind, one zero-shot vote per
    modality it embeds; a lora champion, its caption classes as a `text` vote); None before the first champion."""
    from flows.families import configured_family
    from models.pyfunc import load_registered
    from models.registry import CHAMPION

    registry = registry_for(settings)
    version = registry.alias_version(CHAMPION)
    if version is None:
        return None
    champion = load_registered(registry, version, [configured_family(settings)])
    return champion.family.labelling_votes(champion.model, iter_model_inputs(settings.paths.batch_inputs(batch_id)),
                                           settings.task)


def golden_name(settings: Settings) -> str:
    """The golden folder's name: the batch's folder name, a digest of its manifest and files, and the
    input spec, so an edited golden batch or another input size builds (and versions) a new set."""
    import hashlib

    task, spec = settings.task, input_spec(settings)
    digest = hashlib.sha256(task.fingerprint().encode())
    for path in sorted(p for p in task.golden.rglob("*") if p.is_file()):
        digest.update(path.relative_to(task.golden).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return (f"{task.golden.name}-{digest.hexdigest()[:12]}-s{spec.image_size}-c{spec.image_channels}"
            f"-m{spec.n_mels}-f{spec.audio_frames}")


def build_golden_set(settings: Settings):
    """The fixed, fully labelled golden set: the task's golden batch (`task.golden`), ingested and cleaned
    like any batch, never trained on. Its version is its DVC hash in the lake (`golden/<name>@<md5>.dir`,
    tracked and pushed when first built), so a decision names the exact rows.

    The folder is built whole in a staging sibling and published in one rename, and counts as pushed only
    once the push is recorded: a kill at any moment leaves no folder (the next call builds it afresh and
    sweeps the dead build's staging folder) or the finished one, whose tracking and push the next call completes."""
    from filelock import FileLock

    from features.lake_versioning import open_lake

    name = golden_name(settings)
    folder = settings.paths.golden / name
    relative = folder.relative_to(settings.paths.home).as_posix()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.with_name(name + ".lock"))):  # two gates at once build it once
        if not (folder / "labels.json").exists():  # published with the rest: only a finished folder has it
            _write_golden_folder(settings, folder)
        lake = open_lake(settings.paths.home, settings.lake_remote, settings.lake_endpoint)
        version = lake.pushed_version(relative) or lake.track_and_push(relative)
    return load_golden_folder(folder), version.to_tag()


def load_golden_folder(folder: Path):
    """The golden set a finished folder holds, as the evaluation's `EvalData`."""
    from models.evaluate import eval_data_from_inputs

    inputs = load_model_inputs(folder / "inputs.npz")
    labels = np.array(json.loads((folder / "labels.json").read_text()), dtype=np.int64)
    groups = json.loads((folder / "groups.json").read_text())
    return eval_data_from_inputs(inputs, labels, groups)


def _write_golden_folder(settings: Settings, folder: Path) -> None:
    """The golden batch's lake snapshot, clean rows, model inputs, labels and slice values, into a staging
    sibling of `folder` published over it at the end (an unfinished folder an older build left is replaced).
    Rows ingest or clean quarantine are listed in `refused.json` and logged."""
    from features.atomic import staged_directory
    from features.task import slice_values

    task, spec = settings.task, input_spec(settings)
    with staged_directory(folder) as staging:
        raw = ingest_batch(task.golden, staging / "raw")
        cleaned = clean_batch(raw.batch_dir, staging / "clean", clean_params(settings))
        refused = [*raw.report.quarantined, *cleaned.report.quarantined]
        if refused:  # kept with the set, so a decision shows that its golden set is smaller than the batch
            log.warning("task.golden: %d row(s) of %s were quarantined (first %r: %s) and are not in the golden set",
                        len(refused), task.golden, refused[0].sample_id, refused[0].reason)
        save_json(staging / "refused.json", [{"sample_id": r.sample_id, "stage": r.stage, "reason": r.reason,
                                              "detail": r.detail} for r in refused])
        rows = cleaned.rows.reset_index(drop=True)
        save_model_inputs(staging / "inputs.npz", load_clean_inputs(cleaned.batch_dir, rows, spec))
        save_json(staging / "labels.json", [int(x) for x in rows["label"]])
        save_json(staging / "groups.json", {field: slice_values(rows, field) for field in task.slices})
        save_json(staging / "content.json", sorted(set(row_content_hashes(load_model_inputs(staging / "inputs.npz")))))


def row_content_hashes(inputs: ModelInputs) -> list[str]:
    """Per row, a sha256 of everything the model sees of it (every input array and the caption, not its
    id): a training row with a golden row's hash is the same example and is kept out of training."""
    import hashlib
    from dataclasses import fields

    columns = [f.name for f in fields(inputs) if f.name != "sample_id"]
    hashes = []
    for i in range(len(inputs)):
        digest = hashlib.sha256()
        for name in columns:
            value = getattr(inputs, name)[i]
            digest.update(np.ascontiguousarray(value).tobytes() if isinstance(value, np.ndarray) else str(value).encode())
        hashes.append(digest.hexdigest())
    return hashes


def _training_batches(settings: Settings) -> list[str]:
    """The training window: every ingested batch with model inputs, in ingestion order."""
    return [b for b in list_ingested_batches(settings.paths.lake_raw)
            if has_model_inputs(settings.paths.batch_inputs(b))]


@dataclass(frozen=True)
class TrainingWindow:
    batches: list[str]  # ingested batches with model inputs, in ingestion order
    inputs: ModelInputs  # the rows trained on
    label: np.ndarray  # (N,) trusted class index from the feature store, -1 where unknown
    modalities: tuple[str, ...]  # the input kinds every kept row carries ("image", "caption", "audio", ...)
    golden_excluded: int  # rows with a golden row's content, kept out of training


def _present(inputs: ModelInputs) -> dict[str, np.ndarray]:
    """Per input kind (`image`, `audio`, `caption`, and any sensor the inputs hold), the (N,) presence mask."""
    from dataclasses import fields

    return {f.name[len("has_"):]: getattr(inputs, f.name) for f in fields(inputs) if f.name.startswith("has_")}


def training_window(settings: Settings, captions_only: bool) -> TrainingWindow:
    """The window's batches, its rows with every modality the data carries (a family that reads captions
    only: the caption), less the golden set's rows, and their trusted labels from the feature store."""
    from features.store import get_training_frame

    batches = _training_batches(settings)
    inputs = ModelInputs.concat([load_model_inputs(settings.paths.batch_inputs(b)) for b in batches])
    present = _present(inputs)
    # The data's modalities: the image and caption every binding needs, and each other kind some row has.
    wanted = ("caption",) if captions_only else tuple(k for k, mask in present.items()
                                                      if k in ("image", "caption") or mask.any())
    keep = np.logical_and.reduce([present[k] for k in wanted])
    golden, _ = build_golden_set(settings)
    golden_hashes = set(json.loads((settings.paths.golden / golden_name(settings) / "content.json").read_text()))
    in_golden = np.array([h in golden_hashes for h in row_content_hashes(inputs)], dtype=bool)
    if in_golden.any():
        log.warning("%d training row(s) have the content of a golden row and are left out of training", int(in_golden.sum()))
    inputs = inputs.take(np.flatnonzero(keep & ~in_golden))
    if len(inputs) < 2:
        raise ValueError(f"only {len(inputs)} rows with {', '.join(wanted)} (outside the golden set): too few to train")
    entity = pd.DataFrame({"sample_id": inputs.sample_id, "event_timestamp": pd.Timestamp.now(tz="UTC")})
    labelled = get_training_frame(settings.paths.feast, entity, services=feast_services(settings))
    labelled = labelled.drop_duplicates("sample_id").set_index("sample_id")
    # Labels the label model is unsure of stay unknown to training (they wait in the review queue).
    trusted = labelled["label"].where(labelled["label_confidence"].fillna(0) >= settings.params.label.review_threshold)
    label = trusted.reindex(inputs.sample_id).fillna(-1).to_numpy(dtype=np.int64)
    return TrainingWindow(batches, inputs, label, wanted, int((keep & in_golden).sum()))


def stage_train(settings: Settings, run_name: str, label_metrics: dict[str, float] | None = None,
                data_version: str | None = None, checkpoint_dir: Path | None = None) -> TrainOutcome:
    """Train the configured family (`train.family`) on every accepted batch so far, evaluate on the golden set,
    log the run and the model to MLflow (with this batch's labelling metrics); `data_version` is the lake's
    `lake/inputs@md5`, logged as the run's dataset input."""
    from flows.families import configured_family

    return configured_family(settings).train(TrainRequest(settings, run_name, label_metrics, data_version, checkpoint_dir))


def stage_register(settings: Settings, train: TrainOutcome, lineage: dict[str, str]) -> str:
    from flows.families import configured_family
    from models.registry import LoggedModel, register_candidate

    registry = registry_for(settings)
    tags = {"training_batches": ",".join(train.training_batches), "golden_version": train.golden_version,
            "training_run": train.mlflow_run_id, "family": configured_family(settings).name, **lineage}
    version = register_candidate(registry, LoggedModel(train.mlflow_run_id, train.model_uri), tags)
    write_model_card(settings, version)  # "not gated yet" until stage_gate writes the decision
    return version


LINEAGE_TAGS = ("data_version", "batch", "feature_service", "flow_run", "training_batches", "validation")


def evaluate_gate(settings: Settings, version: str, champion: str | None) -> GateDecision:
    """Challenger and champion, both loaded from the registry, scored by their family on the same golden set
    in one process (latency interleaved), judged by params.yaml `gate.families.<family>`; nothing is written."""
    from flows.families import configured_family
    from models.gate import decide
    from models.pyfunc import load_registered

    if champion == str(version):
        raise ValueError(f"version {version} is @champion already: nothing to compare")
    registry = registry_for(settings)
    golden, golden_version = build_golden_set(settings)
    known = [configured_family(settings)]
    loaded = {"challenger": load_registered(registry, version, known)}
    if champion is not None:
        loaded["champion"] = load_registered(registry, champion, known)
    family = _one_family(registry.model_name, {"challenger": version, "champion": champion},
                         {role: entry.family for role, entry in loaded.items()})
    scored = family.score_golden({role: entry.model for role, entry in loaded.items()}, golden, settings)
    decision = decide(scored.scores["challenger"], scored.scores.get("champion"), gate_policy(settings, family),
                      scored.groups)
    mv = registry.client().get_model_version(registry.model_name, version)
    tags = dict(mv.tags)
    decision.lineage = {"challenger_version": str(version), "champion_version": champion, "golden_version": golden_version,
                        "golden_rows": scored.rows, "family": family.name, "training_run": mv.run_id,
                        **{k: tags[k] for k in LINEAGE_TAGS if k in tags}}
    return decision


def _one_family(model_name: str, versions: dict[str, str | None], families: dict[str, ModelFamily]) -> ModelFamily:
    """The family challenger and champion share; two families are never compared."""
    names = {role: family.name for role, family in families.items()}
    if len(set(names.values())) > 1:
        raise ValueError(
            f"{model_name}: challenger v{versions['challenger']} (family {names['challenger']}) and @champion "
            f"v{versions['champion']} (family {names['champion']}) differ; the gate compares a champion only with its "
            "own family. Leave params.yaml registry.model_name null (one registered model per family, "
            "flywheel-<family>) or promote by hand with `flywheel promote VERSION --force --reason …`")
    return families["challenger"]


def stage_gate(settings: Settings, version: str, flow_run: str | None = None) -> GateDecision:
    """Gate `version` against the current champion, record the decision on the version, and promote it
    if it passed, compare-and-set: StaleChampion if the champion moved meanwhile (the task's retry
    then gates again against the new champion)."""
    from models.registry import CHAMPION, Actor, StaleChampion, promote, record_decision

    registry = registry_for(settings)
    champion = registry.alias_version(CHAMPION)
    decision = evaluate_gate(settings, version, champion)
    decision.lineage["gate_flow_run"] = flow_run
    decision.lineage["decision_artifact"] = record_decision(registry, version, decision.to_dict())
    if decision.passed:
        try:
            promote(registry, version, expected_champion=champion,
                    actor=Actor(reason=f"gate passed: {decision.reason}", flow_run=flow_run))
        except StaleChampion as err:
            registry.client().set_model_version_tag(registry.model_name, version, "gate.promotion", f"stale: {err}"[:5000])
            raise
    decision.lineage["champion_after"] = registry.alias_version(CHAMPION)
    write_model_card(settings, version, decision.to_dict())
    return decision


def stage_monitor(settings: Settings, batch_id: str, run_dir: Path, rejection: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every monitoring check of this batch (as cleaned, so a batch validation rejected is seen too)
    against the champion's training window, this batch excluded: see flows/monitor_stage.py.
    `rejection`: a data stage refused the batch (the run summary's `rejection`); the results say so."""
    from flows.monitor_stage import monitor_batch
    from monitoring.reports import log_drift_run

    summary, result = monitor_batch(settings, batch_id, run_dir, rejection)
    if result is not None and result.data_drift is not None:
        summary["evidently_project"] = settings.params.registry.model_name  # one Evidently project per registered model
        rejected = {"batch_rejected": f"{rejection['stage']}: {rejection['expectation']}"} if rejection else {}
        summary["mlflow_run"] = log_drift_run(registry_for(settings), batch_id, summary["champion"], result.data_drift,
                                              Path(summary["report"]), summary["reference_batches"], rejected)
    return summary

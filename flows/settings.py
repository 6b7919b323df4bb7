"""Settings, read once at the entry point: environment (pydantic-settings) plus params.yaml.

Everything below the entry point receives these typed objects; nothing else reads the
environment or the YAML file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.env import text_cache_max_rows
from features.task import Task, build_prompts, check_golden_batch
from flows.gate_params import BootstrapParams, FamilyGate, GateParams, Threshold, check_family_metrics  # noqa: F401  (re-exported)
from flows.params_base import _Strict
from flows.state_paths import StatePaths
from flows.train_params import AudioAugmentParams
from models.family import is_import_path, load_family


class RegistryParams(_Strict):
    # The MLflow registered model; None: `flywheel-<train.family>`, so each family has its own champion.
    model_name: str | None = None


class DemoParams(_Strict):
    """`flywheel demo-data`: a project's own data generator, named by import path (`module:function`)."""

    generator: str | None = None  # called as generator(out, samples=, seed=, drift=, golden=, **options)
    samples: int = Field(600, gt=0)  # rows per generated landing batch
    golden_samples: int = Field(200, gt=0)  # rows of the batch `--golden` writes
    golden_seed: int = 1000  # `--golden`'s seed: far from the training batches' seeds
    options: dict[str, Any] = Field(default_factory=dict)  # the generator's own keyword arguments


class CleanParams(_Strict):
    sample_rate: int = Field(16000, gt=0)  # audio is resampled to this rate, mono
    max_image_pixels: int = Field(4_000_000, gt=0)  # larger images are rejected (decompression bombs)
    max_audio_seconds: float = Field(30.0, gt=0)  # longer clips are rejected before decoding them fully
    silence_db: float = Field(40.0, gt=0)  # leading/trailing audio quieter than peak minus this is trimmed
    # Images whose 64-bit dHashes differ in at most this many bits, with identical audio, sensors and caption,
    # are near duplicates; -1: off.
    near_duplicate_bits: int = Field(4, ge=-1, le=63)
    max_sensor_values: int = Field(16_000_000, gt=0)  # values in one .npy sensor array, read from its header


class TaskParams(_Strict):
    """`task:` as written; `build_task` turns it into the typed `Task` every stage receives."""

    classes: tuple[str | int, ...]  # class names; an integer is the name it spells (7 -> "7")
    prompts: str | dict[str, str | list[str]]  # a template with {label}, or texts per class (averaged)
    golden: str | None = None  # landing batch, every row labelled; relative to the params file's folder
    slices: tuple[str, ...] = ()  # manifest metadata fields judged per value; the class slice always exists
    languages: tuple[str, ...] | None = None  # accepted caption languages; null: no language check
    image_channels: int = 1  # 1: grayscale; 3: RGB


class ValidateSettings(_Strict):
    min_audio_seconds: float = 0.1  # shorter clips hold no speech
    max_audio_seconds: float = 10.0  # longer clips are recordings gone wrong
    min_image_side: int = 8  # the model's input size; smaller images cannot be upscaled honestly
    min_image_contrast: float = 0.02  # pixel std / 255; below this the image is blank
    max_caption_chars: int = 500  # longer captions are pasted documents, not captions
    max_bad_row_share: float = Field(0.2, ge=0, le=1)  # batch-level: more failing rows than this stops the run
    # Batch-level bounds from the reference (the latest accepted batches); a breach stops the run.
    min_batch_rows_factor: float = Field(0.2, ge=0, le=1)  # fewer rows than this x the median reference batch: partial
    max_batch_rows_factor: float = Field(5.0, ge=1)  # more than this x the median: a duplicated or mixed-up source
    max_mean_shift_stds: float = Field(3.0, ge=0)  # a batch mean this many reference stds off: an outlier
    min_mean_shift_share: float = Field(0.05, ge=0)  # that allowance is at least this share of |reference mean|
    tolerance_sigmas: float = Field(3.0, ge=0)  # standard errors of sampling noise on top (means, null shares)
    null_share_tolerance: float = Field(0.1, ge=0)  # extra share of nulls allowed in a column beyond the reference's
    # Numeric columns whose batch mean is bounded. Level columns (audio_rms_db, audio_peak) are left to drift
    # monitoring, so a quiet microphone alerts instead of stopping ingestion.
    distribution_columns: tuple[str, ...] = ("image_contrast", "audio_seconds", "caption_chars")
    min_reference_rows: int = Field(100, ge=1)  # a thinner reference bounds nothing reliably: reference checks skipped
    reference_batches: int = Field(10, ge=1)  # the latest accepted batches that make up the reference
    # Validation results the Data Docs index lists, newest first (each result keeps its page). GX reads every
    # listed result to build the index at each validation: unbounded, validation slowed with each earlier run
    # (0.55 s, then 1.65 s after 295; benchmarks/validation_history.py). A run makes two or three.
    data_docs_index_results: int = Field(60, ge=1)


class LabelSettings(_Strict):
    # The task's own labelling functions, by import path (`mypkg.lfs:mentions_shape`): each takes a clean
    # row (a dict) and returns a class name or None (abstain); the label model weighs them like the built-in ones.
    functions: tuple[str, ...] = ()
    min_model_confidence: float = Field(0.5, ge=0, le=1)  # the champion's zero-shot votes below this abstain
    review_threshold: float = Field(0.7, ge=0, le=1)  # label-model rows below this go to the review queue
    prior_accuracy: float = Field(0.7, gt=0, lt=1)  # an LF's accuracy before any human label checks it
    prior_strength: float = Field(2.0, ge=0)  # the prior counts as this many checked votes (3 of 3 right: 0.88)
    heldout_folds: int = Field(5, ge=2)  # k of the k-fold accuracy estimate on human labels (fewer rows: leave-one-out)


class TransformParams(_Strict):
    image_size: int = Field(16, ge=4)  # side of the square image input, pixels
    n_mels: int = Field(40, ge=8)  # log-mel bins
    audio_frames: int = Field(100, ge=10)  # 10 ms frames: 1 s of audio per clip


class LoraParams(_Strict):
    """The `lora` family: peft adapters on the frozen MiniLM plus a linear head, caption -> task class."""

    r: int = Field(8, ge=1)  # adapter rank; 8 keeps the trainable share near 0.3 % of MiniLM
    alpha: float = Field(16.0, gt=0)  # updates scaled by alpha / r
    dropout: float = Field(0.05, ge=0, lt=1)  # on the adapters' input only
    steps: int = Field(150, ge=1)  # optimiser steps (epochs follow from the labelled rows and batch_size)
    batch_size: int = Field(32, ge=1)  # captions per step
    lr: float = Field(0.002, gt=0)  # AdamW; suits adapters and a fresh head
    weight_decay: float = Field(0.01, ge=0)  # AdamW decoupled decay
    min_labelled_rows: int = Field(20, ge=2)  # fewer trusted labels in the window: training stops with an error
    # Intra-op threads while training; 2 were 3-4x slower on a shared 2-core machine. None: torch's default.
    torch_threads: int | None = Field(1, ge=1)


class ImageBindLoraParams(_Strict):
    """The imagebind family's LoRA option: retrain by fine-tuning the champion's towers through adapters."""

    enabled: bool = False  # off: every training starts from scratch
    r: int = Field(8, ge=1)  # adapter rank on the vision and audio trunks' attention
    alpha: float = Field(16.0, gt=0)  # updates scaled by alpha / r
    dropout: float = Field(0.0, ge=0, lt=1)  # on the adapters' input only
    train_heads: bool = True  # the heads of the adapted towers train too
    epochs_stage1: int = Field(10, ge=0)  # a fine-tune needs fewer passes than training from scratch
    epochs_stage2: int = Field(10, ge=0)  # (from scratch: train.epochs_stage1 / epochs_stage2)
    lr: float = Field(0.002, gt=0)  # AdamW peak of the fine-tune


class TrainParams(_Strict):
    family: str = "imagebind"  # a registered family (imagebind, lora, a plug-in's from flywheel.families) or module:Family
    lora: LoraParams = LoraParams()  # the lora family's fine-tune
    imagebind_lora: ImageBindLoraParams = ImageBindLoraParams()  # the imagebind family's LoRA retraining
    seed: int = 0  # seeds the initialisation and, with (stage, epoch), each epoch's order and jitter
    batch_size: int = Field(128, ge=2)  # pairs per step; also the number of negatives each positive sees
    epochs_stage1: int = Field(40, ge=0)  # passes over (image, text) pairs; the ViT keeps improving past 30
    epochs_stage2: int = Field(30, ge=0)  # passes over (modality, image) pairs with vision frozen, per binding stage
    lr: float = Field(0.005, gt=0)  # AdamW peak after warm-up, then cosine decay (0.002 and 0.008 were worse)
    weight_decay: float = Field(0.05, ge=0)  # AdamW decay on matrices only (not norms, biases, tokens, scales)
    label_aware: bool = True  # known shared labels count as extra positives (few classes: many per batch)
    embed_dim: int = Field(64, ge=2)  # size of the shared embedding space every modality is projected into
    # Max global gradient norm per step (None: off). Early norms reach 5-9; at 1.0 held-out audio zero-shot
    # was 0.978 on seed 0, against 0.953 at 2.0 and 0.919 unclipped.
    grad_clip: float | None = Field(1.0, gt=0)
    audio_augment: AudioAugmentParams = AudioAugmentParams()  # speech augmentation of the audio stage, and CMVN
    # Frequency max-pooling of the audio patch projection over this many mel bins either way (0: off, Meta's
    # layout): a token stays the same when a speaker moves a band's formants that far (benchmarks/robust_speech.py).
    audio_mel_max_shift: int = Field(0, ge=0)
    # Channels of the mel-pooling audio front end (convolutions that keep every mel bin, then a max over each patch's
    # mel band; models/imagebind/config.py): a token says which spectral shape a band holds, not on which bin.
    # 0: off (Meta's layout); exclusive with audio_mel_max_shift.
    audio_mel_pool_channels: int = Field(0, ge=0)
    # Its convolutions: two_5x3, stride4_first, or one_9x7 (one 9x7 of time stride 4, the cheapest).
    audio_mel_pool_layout: Literal["two_5x3", "stride4_first", "one_9x7"] = "two_5x3"

    @model_validator(mode="after")
    def _one_audio_front_end(self) -> "TrainParams":
        if self.audio_mel_pool_channels and self.audio_mel_max_shift:
            raise ValueError(f"train.audio_mel_pool_channels ({self.audio_mel_pool_channels}) and "
                             f"train.audio_mel_max_shift ({self.audio_mel_max_shift}) are two audio front ends: "
                             "set one of them to 0")
        return self

    @field_validator("family")
    @classmethod
    def _a_family_that_loads(cls, spec: str) -> str:
        load_family(spec)  # ValueError naming the registered families and the import-path form
        return spec


class MonitorParams(_Strict):
    drift_share: float = Field(0.5, gt=0, le=1)  # dataset drift from this share of drifted features (reported)
    feature_threshold: float = Field(0.1, gt=0)  # normed Wasserstein / Jensen-Shannon distance per feature
    # ... raised to this x sqrt(1/n_ref + 1/n_cur) for small batches: ~0.25 for 600 vs 300 rows; clean demo
    # batches reach 0.2 (benchmarks/drift_detection.py)
    noise_sigmas: float = Field(3.5, ge=0)
    fast_path_rows: int = Field(100_000, ge=1001)  # from this many rows per side: exact numpy statistics
    report_rows: int = Field(20_000, ge=1000)  # rows per side in the Evidently report on the fast path
    embedding_threshold: float = Field(0.015, gt=0)  # MMD^2 of the champion's embeddings, per modality
    embedding_max_rows: int = Field(2000, ge=10)  # rows per side sampled for the MMD kernel
    prediction_threshold: float = Field(0.15, gt=0)  # Jensen-Shannon distance of the predicted class mix
    min_rows: int = Field(20, ge=2)  # fewer current rows for a modality: its checks are skipped
    max_missing_increase: float = Field(0.1, gt=0, lt=1)  # extra missing share allowed per feature
    max_out_of_range_share: float = Field(0.05, gt=0, lt=1)  # share outside the reference's [min, max]
    # Accuracy drop on delayed labels that is drift: the reference is the champion's own training window
    # (in-sample), so clean demo batches drop up to 0.13 ...
    max_accuracy_drop: float = Field(0.2, gt=0, lt=1)
    accuracy_p_value: float = Field(0.01, gt=0, lt=1)  # ... when also significant at this level
    min_labelled_rows: int = Field(20, ge=1)  # fewer labelled rows: performance not judged


class ServeParams(_Strict):
    alias_poll_seconds: float = Field(5.0, gt=0)  # how soon a promotion or rollback reaches the API
    max_body_bytes: int = Field(10_000_000, gt=0)  # larger bodies get 413; a 30 s 44.1 kHz WAV in base64 fits
    max_text_chars: int = Field(2000, gt=0)  # longer texts get 422
    # Intra-op threads per request; concurrency comes from parallel requests, and 2 threads on a busy 2-core
    # machine were 2.5x slower (benchmarks/serving.py).
    torch_threads: int = Field(1, ge=1)


class AlertSink(_Strict):
    name: str  # names the sink in logs and in the alert state; the key into FLYWHEEL_ALERT_URLS
    kind: Literal["webhook", "slack", "email"]
    # An apprise URL (json://host/path, https://hooks.slack.com/services/…, mailto://…) or a plain
    # http(s) URL for a webhook; None: taken from FLYWHEEL_ALERT_URLS, where credentials belong.
    url: str | None = None


class AlertParams(_Strict):
    cooldown_hours: float = Field(6.0, gt=0)  # the same drift (model version + drifted columns) alerts once per window
    sinks: tuple[AlertSink, ...] = ()  # where alerts go: {name, kind: webhook|slack|email, url}


class RetrainParams(_Strict):
    on_drift: bool = True  # a drift event (or the monitor flow itself) starts retraining
    min_interval_hours: float = Field(24.0, ge=0)  # at most one training per window, whatever asks for it


class ScheduleParams(_Strict):
    timezone: str = "UTC"  # the crons below are read in this zone
    ingest: str = "0 2 * * *"  # data stages + monitor on `ingest_source`
    retrain: str = "0 3 * * *"  # train on the current window, register, gate
    monitor: str = "0 * * * *"  # drift of the latest ingested batch against the champion's window
    ingest_source: str = "data/landing/batch-001"  # the landing batch (folder or fsspec URI) the ingest deployment reads


class ExtraStageParams(_Strict):
    """A project's own stage (flows/stages.py): `fn(rows, context)` run after the stage `after` names."""

    after: str  # the stage it follows: ingest, clean, validate, transform, label, version, train, register, gate, monitor
    fn: str  # package.module:function
    name: str | None = None  # its name in the summary and the cache; None: the function's name
    params: dict[str, Any] = Field(default_factory=dict)  # given to it as context.params, and part of its cache key


class StagesParams(_Strict):
    extra: tuple[ExtraStageParams, ...] = ()  # in order; several after one stage run in the order written


class Params(_Strict):
    task: TaskParams
    registry: RegistryParams = RegistryParams()
    demo: DemoParams = DemoParams()
    clean: CleanParams = CleanParams()
    validate_: ValidateSettings = Field(ValidateSettings(), alias="validate")
    transform: TransformParams = TransformParams()
    label: LabelSettings = LabelSettings()
    train: TrainParams = TrainParams()
    gate: GateParams = GateParams()
    monitor: MonitorParams = MonitorParams()
    serve: ServeParams = ServeParams()
    alerts: AlertParams = AlertParams()
    retrain: RetrainParams = RetrainParams()
    schedule: ScheduleParams = ScheduleParams()
    stages: StagesParams = StagesParams()

    @model_validator(mode="before")
    @classmethod
    def _task_first(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "task" not in raw:
            raise ValueError("params.yaml has no task: section; declare the task's classes, prompts and golden "
                             "batch (`flywheel init DIR` writes a commented one)")
        validate = raw.get("validate") if isinstance(raw, dict) else None
        if isinstance(validate, dict) and "languages" in validate:
            raise ValueError("validate.languages moved to task.languages (null: no language check)")
        return raw

    @model_validator(mode="after")
    def _a_mel_shift_the_spectrogram_holds(self) -> "Params":
        if 2 * self.train.audio_mel_max_shift >= self.transform.n_mels:
            raise ValueError(f"train.audio_mel_max_shift ({self.train.audio_mel_max_shift}) must be under half of "
                             f"transform.n_mels ({self.transform.n_mels}): the pool would span the whole spectrogram")
        return self

    @model_validator(mode="after")
    def _a_filterbank_at_the_clean_rate(self) -> "Params":
        from models.fbank import check_filterbank  # numpy only, imported when params are checked

        check_filterbank(self.clean.sample_rate, self.transform.n_mels)
        return self

    @model_validator(mode="after")
    def _slices_of_the_task(self) -> "Params":
        known = {"class", *self.task.slices}
        for where, slices in ((f"gate.families.{name}.slices", gate.slices) for name, gate in self.gate.families.items()):
            unknown = sorted(set(slices) - known)
            if unknown:
                raise ValueError(f"{where}: {unknown} is not a slice of the task; slices are 'class' and "
                                 f"task.slices {list(self.task.slices)}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _name_the_family_registry(cls, raw: Any) -> Any:
        """`registry.model_name: null` (or absent) becomes `flywheel-<family name>`: one champion per family."""
        if not isinstance(raw, dict):
            return raw
        registry = raw.get("registry") or {}
        if isinstance(registry, dict) and registry.get("model_name") is None:
            train = raw.get("train") or {}
            spec = train.get("family", "imagebind") if isinstance(train, dict) else "imagebind"
            try:
                name = load_family(spec).name if isinstance(spec, str) and is_import_path(spec) else spec
            except (ValueError, TypeError):
                return raw  # a wrong family is reported by the field's own check
            if isinstance(name, str):
                raw = {**raw, "registry": {**registry, "model_name": f"flywheel-{name}"}}
        return raw

    @model_validator(mode="after")
    def _gate_of_the_trained_family(self) -> "Params":
        """The trained family's gate names only its metrics, also for a family given by import path."""
        family = load_family(self.train.family)
        if family.name in self.gate.families:
            check_family_metrics(f"gate.families.{family.name}", family, self.gate.families[family.name])
        return self


class EnvSettings(BaseSettings):
    """What the environment may set: where state lives and which params file to read."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore")
    home: Path = Path(".flywheel")
    params: Path = Path("params.yaml")
    lake_remote: str | None = None  # DVC remote of the lake, e.g. s3://flywheel-lake (default: FLYWHEEL_HOME/dvc-remote)
    lake_endpoint: str | None = None  # S3 endpoint for that remote, e.g. http://minio:9000
    # fsspec options for `--source` URIs, as JSON, e.g. {"endpoint_url": "http://minio:9000", "key": …, "secret": …}
    storage_options: dict[str, Any] = {}
    dask_address: str | None = None  # a Dask scheduler (tcp://host:8786) for the data steps; None: local threads
    # What the champion lock locks: postgresql://… (the MLflow server's database: an advisory lock) or
    # file:///shared/folder; None: the tracking URI itself (a file lock beside the embedded SQLite store).
    registry_lock_uri: str | None = None
    # Feast's online store and registry on the stack's services: redis://host:6379/0 and a SQLAlchemy URL
    # (postgresql+psycopg://user@host/feast) for the SQL registry; None: the SQLite/file stores under FLYWHEEL_HOME/feast.
    feast_online: str | None = None
    feast_registry: str | None = None
    # Alert sink URLs carrying credentials, as JSON {sink name: apprise URL}, for sinks without `url` in params.yaml.
    alert_urls: dict[str, str] = {}
    # FLYWHEEL_PREFECT_SERVER_HOME: the folder of the one local Prefect server every home shares (its SQLite, log
    # and server.json); None: flows.prefect_server.default_server_home ($XDG_STATE_HOME/flywheel/prefect-server).
    prefect_server_home: Path | None = None


@dataclass(frozen=True)
class Settings:
    params: Params
    paths: StatePaths
    task: Task
    tracking_uri: str  # MLflow; the embedded SQLite store unless MLFLOW_TRACKING_URI says otherwise
    lake_remote: str | None = None
    lake_endpoint: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)  # credentials: from the environment only
    dask_address: str | None = None
    registry_lock_uri: str | None = None
    # The Prefect server this process was started against (PREFECT_API_URL); with an HTTP tracking URI its
    # global concurrency limits lock the registry across machines (flows/registry_locks.py).
    prefect_api_url: str | None = None
    # The folder of the machine's local Prefect server, shared by every home (flows/prefect_server.py), used
    # without PREFECT_API_URL; load_settings always sets it (None only in settings built by hand, which start none).
    prefect_server_home: Path | None = None
    alert_urls: dict[str, str] = field(default_factory=dict)  # sink name -> URL, params.yaml's or the environment's
    feast_online: str | None = None  # Feast online store (redis://…); None: SQLite under paths.feast
    feast_registry: str | None = None  # Feast SQL registry (postgresql+psycopg://…); None: file registry under paths.feast


def _alert_urls(params: Params, from_env: dict[str, str]) -> dict[str, str]:
    """Every sink's URL; a sink with no URL anywhere stops start-up, naming the sink."""
    urls = {sink.name: sink.url or from_env.get(sink.name) for sink in params.alerts.sinks}
    missing = [name for name, url in urls.items() if not url]
    if missing:
        raise ValueError(f"alert sinks {missing} have no url in params.yaml and none in FLYWHEEL_ALERT_URLS "
                         f"(which names {sorted(from_env)})")
    return urls  # type: ignore[return-value]


def load_params(path: Path) -> Params:
    """Parse params.yaml; a wrong key or value stops here with the offending entry named."""
    if not path.exists():
        raise FileNotFoundError(f"params file {path} not found (set FLYWHEEL_PARAMS or run from the project root)")
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ValueError(f"invalid {path}:\n{err}") from err


def build_task(params: Params, params_path: Path) -> Task:
    """The typed task; `golden` resolves against the params file's own folder (a symlinked params.yaml:
    the folder it points into), and a golden batch that cannot work stops here."""
    t = params.task
    classes = tuple(str(c) for c in t.classes)
    folder = params_path.resolve().parent
    golden = None if t.golden is None else (folder / t.golden).resolve()
    task = Task(classes=classes, prompts=build_prompts(classes, t.prompts), golden=golden, slices=t.slices,
                languages=t.languages, image_channels=t.image_channels)
    check_golden_batch(task)
    return task


def load_settings(home: Path | None = None, params_path: Path | None = None) -> Settings:
    """Build the settings once, at the entry point."""
    import os

    from flows.prefect_server import default_server_home

    env = EnvSettings()
    text_cache_max_rows()  # a cap on the captions' cache that cannot work stops here, before any stage runs
    paths = StatePaths((home or env.home).absolute())
    params_path = params_path or env.params
    params = load_params(params_path)
    try:
        task = build_task(params, params_path)
    except ValueError as err:
        raise ValueError(f"invalid {params_path}: {err}") from err
    if params.stages.extra:  # a project's stage that cannot be imported stops here, before any stage runs
        from flows.stages import build_table

        try:
            build_table([entry.model_dump() for entry in params.stages.extra])
        except ValueError as err:
            raise ValueError(f"invalid {params_path}: {err}") from err
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or paths.tracking_uri
    if env.registry_lock_uri:
        from models.registry_lock import check_lock_uri

        check_lock_uri(env.registry_lock_uri)  # a lock that cannot work stops here, before any stage runs
    return Settings(params=params, paths=paths, task=task, tracking_uri=tracking_uri,
                    lake_remote=env.lake_remote, lake_endpoint=env.lake_endpoint, storage_options=env.storage_options,
                    dask_address=env.dask_address, registry_lock_uri=env.registry_lock_uri,
                    prefect_api_url=os.environ.get("PREFECT_API_URL") or None,
                    prefect_server_home=(env.prefect_server_home or default_server_home(os.environ)).expanduser().absolute(),
                    alert_urls=_alert_urls(params, env.alert_urls),
                    feast_online=env.feast_online, feast_registry=env.feast_registry)

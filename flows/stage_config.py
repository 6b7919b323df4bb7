"""Typed parameters of the stages, built from the settings: one converter per library-facing object."""

from __future__ import annotations

from features.clean import CleanParams
from features.expectations import ValidateParams
from features.label import LabelParams, is_built_in_lf_name
from features.label_functions import LabellingFunction, load_labelling_functions
from features.label_model import LabelModelParams
from flows.settings import ImageBindLoraParams, LoraParams, Params, Settings, TrainParams
from flows.train_params import AudioAugmentParams
from models.gate import GatePolicy, MetricThreshold
from models.inputs import InputSpec


def clean_params(settings: Settings) -> CleanParams:
    p = settings.params.clean
    return CleanParams(settings.task, sample_rate=p.sample_rate, max_image_pixels=p.max_image_pixels,
                       max_audio_seconds=p.max_audio_seconds, silence_db=p.silence_db,
                       near_duplicate_bits=p.near_duplicate_bits, max_sensor_values=p.max_sensor_values,
                       inputs=input_spec(settings))  # decoded once: clean builds the model inputs too


def input_spec(settings: Settings) -> InputSpec:
    return params_input_spec(settings.params)


def params_input_spec(params: Params) -> InputSpec:
    """The model inputs `transform:` and the task's image channels fix (for code that has params, no home)."""
    t = params.transform
    return InputSpec(t.image_size, t.n_mels, t.audio_frames, image_channels=params.task.image_channels)


def validate_params(settings: Settings) -> ValidateParams:
    """The clean rows suites' bounds: params.yaml's `validate:` with the task's classes and languages."""
    return ValidateParams(n_classes=settings.task.n_classes, languages=settings.task.languages,
                          **settings.params.validate_.model_dump())


def label_params(settings: Settings) -> LabelParams:
    p = settings.params.label
    return LabelParams(p.min_model_confidence, p.review_threshold,
                       LabelModelParams(p.prior_accuracy, p.prior_strength, p.heldout_folds))


def train_config(train: TrainParams, sample_rate: int, **run: object):
    """`train:` as the imagebind family's TrainConfig for audio at `sample_rate` (params.yaml clean.sample_rate);
    `run` sets the fields params.yaml has no say in (checkpoint_dir, device, ...)."""
    from models.train import TrainConfig

    return TrainConfig(seed=train.seed, batch_size=train.batch_size, epochs_stage1=train.epochs_stage1,
                       epochs_stage2=train.epochs_stage2, lr=train.lr, weight_decay=train.weight_decay,
                       label_aware=train.label_aware, grad_clip=train.grad_clip,
                       audio_augment=audio_augment(train.audio_augment, sample_rate), **run)  # type: ignore[arg-type]


def imagebind_config(train: TrainParams, spec: InputSpec, **fields: object):
    """The ImageBind the imagebind family builds from `train:` for inputs of `spec` (`fields`: e.g. the
    modalities the window carries); tests and benchmarks build the shipped model through it too."""
    from models.imagebind import ImageBindConfig

    return ImageBindConfig(embed_dim=train.embed_dim, audio_cmvn=train.audio_augment.cmvn,
                           audio_mel_max_shift=train.audio_mel_max_shift,
                           audio_mel_pool_channels=train.audio_mel_pool_channels,
                           audio_mel_pool_layout=train.audio_mel_pool_layout, **spec.config_fields(), **fields)


def audio_augment(params: AudioAugmentParams, sample_rate: int):
    """`train.audio_augment` as the pure layer's `AudioAugment` for audio at `sample_rate`; its `cmvn` goes to the
    model config instead."""
    from models.audio_augment import AudioAugment

    return AudioAugment(**params.model_dump(exclude={"cmvn"}), sample_rate=sample_rate)


def lora_settings(lora: LoraParams | ImageBindLoraParams):
    """The adapter of `train.lora` (the lora family: its head always trains) or `train.imagebind_lora`."""
    from models.lora import LoraSettings

    train_heads = lora.train_heads if isinstance(lora, ImageBindLoraParams) else True
    return LoraSettings(r=lora.r, alpha=lora.alpha, dropout=lora.dropout, train_heads=train_heads)


def classifier_training(lora: LoraParams, seed: int):
    """`train.lora`'s optimisation, seeded by `train.seed`."""
    from models.lora import ClassifierTraining

    return ClassifierTraining(steps=lora.steps, batch_size=lora.batch_size, lr=lora.lr,
                              weight_decay=lora.weight_decay, seed=seed)


def labelling_functions(settings: Settings) -> list[LabellingFunction]:
    """The task's own LFs from params.yaml `label.functions`, imported (ValueError naming a bad path):
    called at start-up to fail early, and by the label stage."""
    return load_labelling_functions(settings.params.label.functions, is_reserved=is_built_in_lf_name)


def feast_services(settings: Settings):
    """Feast's online store and registry: the stack's Redis and Postgres when the environment names them."""
    from features.store import FeastServices

    return FeastServices(online=settings.feast_online, registry=settings.feast_registry)


def registry_for(settings: Settings):
    """The MLflow registry of this run's model (MLflow is imported only when a stage needs it)."""
    from flows.registry_locks import choose_registry_lock
    from models.registry import Registry

    # A tracking server stores artifacts where it is told (--artifacts-destination: MinIO in the stack);
    # a local folder here would put them on this machine's disk, out of reach of every other client.
    on_server = settings.tracking_uri.startswith(("http://", "https://"))
    return Registry(settings.tracking_uri, settings.params.registry.model_name,
                    None if on_server else settings.paths.mlflow_artifacts, lock_uri=settings.registry_lock_uri,
                    lock=choose_registry_lock(settings))  # one choice for the gate, promote and rollback


def champion_version(settings: Settings) -> str | None:
    """The champion's version, for a key (the monitor's): read from the embedded store's file where it can
    answer (`models.tracking_store.read_alias_from_file`; no MLflow import, so a fully cached run stays
    cheap), else through MLflow's client (a tracking server, a store not made yet)."""
    from models.tracking_store import CHAMPION, AliasUnreadable, read_alias_from_file

    try:
        return read_alias_from_file(settings.tracking_uri, settings.params.registry.model_name, CHAMPION)
    except AliasUnreadable:
        return registry_for(settings).alias_version(CHAMPION)


def gate_policy(settings: Settings, family=None) -> GatePolicy:
    """The gate's thresholds for `family` (a ModelFamily or its name; default: params.yaml's `train.family`):
    `gate.families.<name>.thresholds` and `.slices`, each metric judged in the direction the family declares;
    latency items, bootstrap and slice size are shared."""
    from flows.families import configured_family
    from models.bootstrap import BootstrapConfig
    from models.family import load_family

    g = settings.params.gate
    if family is None:
        family = configured_family(settings)
    elif isinstance(family, str):
        family = load_family(family)
    judged = g.families.get(family.name)
    if judged is None or not judged.thresholds:
        raise ValueError(f"params.yaml gate.families.{family.name}.thresholds is empty: the {family.name} family's gate "
                         f"needs at least one metric threshold (gate.families names {sorted(g.families)}; the family "
                         f"computes {sorted(family.metric_directions())})")

    def threshold(t) -> MetricThreshold:
        return MetricThreshold(t.min, t.max, t.max_drop, t.max_drop_rel)

    return GatePolicy({k: threshold(v) for k, v in judged.thresholds.items()},
                      {group: {k: threshold(v) for k, v in metrics.items()} for group, metrics in judged.slices.items()},
                      min_slice_rows=g.min_slice_rows, bootstrap=BootstrapConfig(g.bootstrap.resamples, g.bootstrap.confidence, g.bootstrap.seed),
                      directions=dict(family.metric_directions()))

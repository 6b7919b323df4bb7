"""Great Expectations validation of the pipeline's tables: row-level failures to quarantine,
batch-level rejection when a batch as a whole is unfit.

Three suites, each built in code (a params change is a suite change, saved before the run)
and run through a Checkpoint, so that every run leaves its validation result and Data Docs
behind in the file-mode context at `gx_dir`:

- `clean_rows`: the clean stage's schema (every column, with its dtype) and the per-row rules
  (required fields, unique ids, value ranges, label and language sets). A failed schema
  expectation rejects the batch; failing rows are returned for quarantine, unless more than
  `max_bad_row_share` of the batch fails.
- `clean_rows_reference`: bounds from the clean rows of earlier accepted batches
  (`ReferenceProfile`, saved as JSON under `gx_dir/profiles/`): row count, column means and
  null shares, evaluated on the rows that pass `clean_rows`. Any failure rejects the batch.
  Skipped while the reference is missing or thinner than `min_reference_rows`.
- `sample_features`: schema and value ranges of the transform's feature table.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlparse

import great_expectations as gx
import great_expectations.exceptions as gx_exceptions
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context import FileDataContext
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.datasource.fluent import PandasDatasource
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

from features.clean import rows_to_frame
from features.io import save_json
from features.transform import CATEGORICAL_FEATURES, NUMERIC_FEATURES

SUITE_NAME = "clean_rows"
REFERENCE_SUITE_NAME = "clean_rows_reference"
FEATURES_SUITE_NAME = "sample_features"
PROFILES_DIR = "profiles"  # under gx_dir: the reference profile each batch was checked against
_DATASOURCE_NAME = "flywheel"
_BATCH_DEFINITION_NAME = "whole_table"  # the caller hands one in-memory frame per batch
_DOCS_SITE = "local_site"  # the site a file-mode context scaffolds
_IDS_IN_MESSAGE = 5
_NEVER_NULL = ("sample_id", "captured_at")  # row-level not-null rules; no null share to bound
_MAD_TO_STD = 1.4826  # MAD x this estimates the standard deviation of normally distributed values

# COMPLETE lists every failing row; the id column turns row positions into sample_ids.
_ROW_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": ["sample_id"],
    "return_unexpected_index_query": False,  # a pandas snippet per expectation, unused here
}
# Batch-level suites need only a few example rows, not every null of every column.
_BATCH_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": _IDS_IN_MESSAGE,
    "unexpected_index_column_names": ["sample_id"],
    "return_unexpected_index_query": False,
}

# Ranges the feature definitions guarantee (ratios, positions as a share of the side, the pitch
# tracker's search band widened); a value outside is a transform bug or a corrupt file.
FEATURE_RANGES: dict[str, tuple[float | None, float | None]] = {
    "img_mean": (0.0, 1.0),
    "img_ink_ratio": (0.0, 1.0),
    "img_center_col": (0.0, 1.0),
    "img_center_row": (0.0, 1.0),
    "img_sharpness": (0.0, None),
    "img_contrast": (0.0, 0.5),  # the std of values in [0, 1]
    "aud_seconds": (0.0, None),
    "aud_peak": (0.0, None),
    "aud_silence_ratio": (0.0, 1.0),
    "aud_centroid_hz": (0.0, None),
    "aud_pitch_hz": (40.0, 500.0),
    "cap_chars": (0.0, None),
    "cap_words": (0.0, None),
    "cap_number_found": (0.0, 1.0),  # a flag
}


@dataclass(frozen=True)
class ValidateParams:
    """Bounds of the clean rows suites; one object per run, built from params.yaml."""

    languages: tuple[str, ...] = ("en", "de", "fr", "es")  # languages the text encoder is trained for
    labels: tuple[int, ...] = tuple(range(10))  # the digit classes
    min_audio_seconds: float = 0.1  # shorter clips hold no spoken digit
    max_audio_seconds: float = 10.0  # longer clips are recordings gone wrong
    min_image_side: int = 8  # the model's input size; smaller images cannot be upscaled honestly
    min_image_contrast: float = 0.02  # pixel std / 255; below this the image is blank
    max_caption_chars: int = 500  # longer captions are pasted documents, not captions
    max_bad_row_share: float = 0.2  # batch-level: more failing rows than this stops the run
    min_batch_rows_factor: float = 0.2  # fewer rows than this x the median reference batch: a partial upload
    max_batch_rows_factor: float = 5.0  # more than this x the median: a duplicated or mixed-up source
    max_mean_shift_stds: float = 3.0  # batch mean this many reference stds off: its average row is an outlier
    min_mean_shift_share: float = 0.05  # that allowance is at least this share of |reference mean| (constant columns)
    tolerance_sigmas: float = 3.0  # standard errors of sampling noise allowed on top, for means and null shares
    null_share_tolerance: float = 0.1  # extra share of nulls allowed in a column beyond the reference's
    distribution_columns: tuple[str, ...] = (  # numeric columns whose batch mean is bounded
        "image_contrast", "audio_seconds", "audio_peak", "audio_rms_db", "caption_chars",
    )
    min_reference_rows: int = 100  # a thinner reference bounds nothing reliably: reference checks skipped
    reference_batches: int = 10  # the latest accepted batches that make up the reference

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_row_share <= 1.0:
            raise ValueError(f"max_bad_row_share must be in [0, 1], got {self.max_bad_row_share}")
        if not 0.0 <= self.min_audio_seconds < self.max_audio_seconds:
            raise ValueError(
                "need 0 <= min_audio_seconds < max_audio_seconds, got"
                f" {self.min_audio_seconds} and {self.max_audio_seconds}"
            )
        if not self.languages or not self.labels:
            raise ValueError(f"languages and labels must not be empty, got {self.languages} and {self.labels}")
        if not 0.0 <= self.min_batch_rows_factor <= 1.0 <= self.max_batch_rows_factor:
            raise ValueError(
                "need 0 <= min_batch_rows_factor <= 1 <= max_batch_rows_factor, got"
                f" {self.min_batch_rows_factor} and {self.max_batch_rows_factor}"
            )
        tolerances = ("max_mean_shift_stds", "min_mean_shift_share", "tolerance_sigmas", "null_share_tolerance")
        negative = {name: getattr(self, name) for name in tolerances if getattr(self, name) < 0}
        if negative:
            raise ValueError(f"{', '.join(negative)} must be >= 0, got {negative}")
        numeric = [column for column, dtype in _clean_dtypes().items() if dtype in ("Int64", "float64")]
        unknown = [column for column in self.distribution_columns if column not in numeric]
        if unknown:
            raise ValueError(f"distribution_columns {unknown} are not numeric clean columns; accepted: {numeric}")
        if self.min_reference_rows < 2 or self.reference_batches < 1:
            raise ValueError(
                "need min_reference_rows >= 2 and reference_batches >= 1, got"
                f" {self.min_reference_rows} and {self.reference_batches}"
            )


@dataclass
class ValidationOutcome:
    """What the caller needs from one validation: the ids to quarantine and the evidence."""

    failed: dict[str, list[str]]  # sample_id -> names of the row-level expectations it failed
    statistics: dict[str, Any]  # GX's expectation counts and success percent, plus row counts
    data_docs: Path | None  # local path of the Data Docs index.html
    suite_name: str
    reference_profile: Path | None = None  # the profile JSON the batch was checked against; None: no reference


class BatchRejected(Exception):
    """The batch as a whole is unfit: quarantining its bad rows would hide a broken source."""

    def __init__(
        self,
        message: str,
        *,
        expectation: str,
        observed: float | str,
        bound: float | str,
        sample_ids: list[str],
    ) -> None:
        super().__init__(message)
        self.expectation = expectation
        self.observed = observed
        self.bound = bound
        self.sample_ids = sample_ids


@dataclass(frozen=True)
class ColumnProfile:
    """What the reference says about one numeric column."""

    center: float  # median of the reference batches' means: one odd batch does not move it
    std: float  # row-level standard deviation over all reference values
    between_batch_std: float  # 1.4826 x MAD of the batch means: how much batches differ beyond sampling


@dataclass(frozen=True)
class ReferenceProfile:
    """Statistics of the clean rows of earlier accepted batches, the source of the reference bounds."""

    batch_ids: tuple[str, ...]  # oldest first
    rows: int
    median_batch_rows: float
    columns: dict[str, ColumnProfile]  # distribution columns with at least two reference values
    null_shares: dict[str, float]  # column -> share of nulls over all reference rows


def build_suite(params: ValidateParams) -> gx.ExpectationSuite:
    """Schema, then the row-level expectations; nulls pass wherever a column is optional (GX skips them)."""
    expectations = [
        *_schema_expectations(_clean_dtypes()),
        gxe.ExpectColumnValuesToNotBeNull(column="sample_id"),
        gxe.ExpectColumnValuesToBeUnique(column="sample_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="captured_at"),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(params.labels)),
        gxe.ExpectColumnValuesToBeInSet(column="language", value_set=list(params.languages)),
        gxe.ExpectColumnValuesToBeBetween(
            column="audio_seconds", min_value=params.min_audio_seconds, max_value=params.max_audio_seconds
        ),
        gxe.ExpectColumnValuesToBeBetween(column="image_width", min_value=params.min_image_side),
        gxe.ExpectColumnValuesToBeBetween(column="image_height", min_value=params.min_image_side),
        gxe.ExpectColumnValuesToBeBetween(column="image_contrast", min_value=params.min_image_contrast),
        gxe.ExpectColumnValuesToBeBetween(column="caption_chars", max_value=params.max_caption_chars),
    ]
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations)


def build_features_suite() -> gx.ExpectationSuite:
    """Schema of the transform's feature table and the ranges its definitions guarantee."""
    dtypes = {
        "sample_id": "object", "event_timestamp": "datetime64[ns, UTC]", "batch_id": "object",
        **dict.fromkeys(NUMERIC_FEATURES, "float32"), **dict.fromkeys(CATEGORICAL_FEATURES, "object"),
    }
    ranges = [
        gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high)
        for column, (low, high) in FEATURE_RANGES.items()
        if column in NUMERIC_FEATURES
    ]
    expectations = [
        *_schema_expectations(dtypes),
        gxe.ExpectColumnValuesToNotBeNull(column="sample_id"),
        gxe.ExpectColumnValuesToBeUnique(column="sample_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="event_timestamp"),
        *ranges,
    ]
    return gx.ExpectationSuite(name=FEATURES_SUITE_NAME, expectations=expectations)


def build_reference_profile(reference: pd.DataFrame, params: ValidateParams) -> ReferenceProfile:
    """Per-batch sizes and means, pooled spread and null shares of the latest `reference_batches`.

    `reference` holds clean rows of accepted batches, oldest first, with a `batch_id` column.
    """
    if "batch_id" not in reference.columns:
        raise ValueError(f"the reference needs a batch_id column; got columns {list(reference.columns)}")
    batch_ids = tuple(str(b) for b in pd.unique(reference["batch_id"]))[-params.reference_batches :]
    reference = reference[reference["batch_id"].astype(str).isin(batch_ids)]
    batches = reference["batch_id"].astype(str)
    columns = {}
    for column in params.distribution_columns:
        if column not in reference.columns:
            continue
        values = pd.to_numeric(reference[column], errors="coerce").astype(float)
        if values.count() < 2:
            continue
        batch_means = values.groupby(batches).mean().dropna()
        center = float(batch_means.median())
        spread = float((batch_means - center).abs().median()) * _MAD_TO_STD
        columns[column] = ColumnProfile(center=center, std=float(values.std()), between_batch_std=spread)
    null_shares = {
        column: float(reference[column].isna().mean())
        for column in _clean_dtypes()
        if column in reference.columns and column not in _NEVER_NULL
    }
    return ReferenceProfile(
        batch_ids=batch_ids,
        rows=len(reference),
        median_batch_rows=float(batches.value_counts().median()),
        columns=columns,
        null_shares=null_shares,
    )


def mean_bounds(stats: ColumnProfile, values: int, params: ValidateParams) -> tuple[float, float]:
    """Where the mean of `values` non-null values may lie: centre +- (shift + noise), where

    shift = max(max_mean_shift_stds x std, min_mean_shift_share x |centre|): an effect size, so
    the bound does not tighten as batches grow. Validation stops broken sources, not drift: a
    mean shifted by 3 stds makes the batch's average row an outlier of the reference, while
    smaller shifts pass on to drift monitoring. The share floor lets a column that was constant
    in the reference still move a little.
    noise = tolerance_sigmas x sqrt(std^2 / n + between^2): the sampling noise of a batch mean
    (a small batch's mean is noisier) and the spread of the reference batch means.
    Centre, std and between-batch spread are medians and standard deviations of the reference,
    not its extremes, so one odd value or batch does not stretch the bound.
    """
    shift = max(params.max_mean_shift_stds * stats.std, params.min_mean_shift_share * abs(stats.center))
    noise = params.tolerance_sigmas * math.hypot(stats.std / math.sqrt(values), stats.between_batch_std)
    return _round(stats.center - shift - noise), _round(stats.center + shift + noise)


def null_share_bound(reference_share: float, rows: int, params: ValidateParams) -> float:
    """Largest null share allowed in a batch of `rows`: the reference share plus sampling noise
    (k binomial standard errors) plus `null_share_tolerance`. Only an upper bound: a column that
    fills up (a source adding audio) is not a broken source."""
    noise = params.tolerance_sigmas * math.sqrt(reference_share * (1.0 - reference_share) / rows)
    return _round(reference_share + noise + params.null_share_tolerance)


def build_reference_suite(profile: ReferenceProfile, rows: pd.DataFrame, params: ValidateParams) -> gx.ExpectationSuite:
    """The reference bounds for this batch (`rows`: its rows that passed the row-level suite)."""
    low_rows = math.ceil(params.min_batch_rows_factor * profile.median_batch_rows)
    high_rows = math.floor(params.max_batch_rows_factor * profile.median_batch_rows)
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=low_rows,
            max_value=high_rows,
            notes=f"{params.min_batch_rows_factor:g}x to {params.max_batch_rows_factor:g}x the median reference"
            f" batch of {profile.median_batch_rows:g} rows",
        )
    ]
    for column, stats in profile.columns.items():
        values = int(rows[column].notna().sum()) if column in rows.columns else 0
        if values == 0:  # a column that lost all its values fails its null-share bound instead
            continue
        low, high = mean_bounds(stats, values, params)
        expectations.append(
            gxe.ExpectColumnMeanToBeBetween(
                column=column,
                min_value=low,
                max_value=high,
                notes=f"reference centre {stats.center:.4g} +- (max({params.max_mean_shift_stds:g} x std"
                f" {stats.std:.3g}, {params.min_mean_shift_share:g} x |centre|) + {params.tolerance_sigmas:g} x"
                f" sqrt(std^2 / {values} values + between-batch std {stats.between_batch_std:.3g}^2))",
            )
        )
    for column, share in profile.null_shares.items():
        bound = null_share_bound(share, len(rows), params)
        if bound < 1.0:
            expectations.append(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=column,
                    mostly=_round(1.0 - bound),
                    notes=f"null share at most {bound:.1%}: reference {share:.1%} + sampling noise"
                    f" + {params.null_share_tolerance:.0%}",
                )
            )
    return gx.ExpectationSuite(name=REFERENCE_SUITE_NAME, expectations=expectations)


def expectation_name(config: ExpectationConfiguration | None) -> str:
    """Stable, readable name used as the quarantine detail, e.g. `expect_..._between(audio_seconds)`."""
    if config is None:  # typed optional by GX, but every result of a suite run carries its config
        raise ValueError("a validation result has no expectation configuration to name it by")
    column = config.kwargs.get("column")
    return f"{config.type}({column})" if column else config.type


def validate_rows(
    rows: pd.DataFrame,
    gx_dir: Path,
    params: ValidateParams,
    batch_id: str,
    *,
    reference: pd.DataFrame | None = None,
) -> ValidationOutcome:
    """Validate one batch of clean rows; return the failing ids, or raise BatchRejected.

    `reference`: clean rows of earlier accepted batches with a `batch_id` column, oldest first
    (None on the first batch). Writes suites, validation results, the reference profile and
    Data Docs under `gx_dir` (created if missing). `rows` is not modified.
    """
    if rows.empty:
        raise BatchRejected(
            f"batch {batch_id!r} rejected: the clean rows table is empty",
            expectation="non_empty_table",
            observed=0,
            bound=1,
            sample_ids=[],
        )
    context = _open_context(gx_dir)
    suite_result = _run_checkpoint(context, SUITE_NAME, build_suite(params), rows, batch_id, _ROW_RESULT_FORMAT)
    _reject_on_schema_failures(suite_result, batch_id)
    _raise_on_expectation_errors(suite_result)
    _reject_unusable_ids(rows, batch_id)
    ids_by_expectation = _failing_ids_by_expectation(suite_result)
    failed = _failed_by_sample(ids_by_expectation)
    passed = ~rows["sample_id"].isin(failed.keys())
    bad_rows = int((~passed).sum())
    _reject_if_too_many_bad(bad_rows, len(rows), ids_by_expectation, params, batch_id)

    statistics = {**_statistics(suite_result), "rows": len(rows), "failed_rows": bad_rows}
    statistics.update(reference_batches=0, reference_expectations=0)
    if reference is not None and "batch_id" in reference.columns:
        reference = reference[reference["batch_id"].astype(str) != batch_id]  # a re-run is not its own reference
    profile_path = None
    if reference is not None and len(reference) >= params.min_reference_rows:
        profile = build_reference_profile(reference, params)
        profile_path = gx_dir / PROFILES_DIR / f"{batch_id}.json"
        save_json(profile_path, asdict(profile))
        accepted = rows[passed]  # a quarantined outlier must not move the batch's mean
        suite = build_reference_suite(profile, accepted, params)
        result = _run_checkpoint(context, REFERENCE_SUITE_NAME, suite, accepted, batch_id, _BATCH_RESULT_FORMAT)
        _raise_on_expectation_errors(result)
        _reject_on_reference_failures(result, accepted, profile, batch_id)
        statistics.update(
            reference_batches=len(profile.batch_ids),
            reference_expectations=_plain(result.statistics["evaluated_expectations"]),
        )
    return ValidationOutcome(
        failed=failed,
        statistics=statistics,
        data_docs=_data_docs_index(context),
        suite_name=SUITE_NAME,
        reference_profile=profile_path,
    )


def validate_features(features: pd.DataFrame, gx_dir: Path, batch_id: str) -> ValidationOutcome:
    """Validate the feature table of one batch; return the rows out of range, or raise
    BatchRejected when its schema is not the transform's."""
    context = _open_context(gx_dir)
    suite_result = _run_checkpoint(
        context, FEATURES_SUITE_NAME, build_features_suite(), features, batch_id, _ROW_RESULT_FORMAT
    )
    _reject_on_schema_failures(suite_result, batch_id)
    _raise_on_expectation_errors(suite_result)
    failed = _failed_by_sample(_failing_ids_by_expectation(suite_result))
    statistics = {**_statistics(suite_result), "rows": len(features), "failed_rows": len(failed)}
    return ValidationOutcome(
        failed=failed, statistics=statistics, data_docs=_data_docs_index(context), suite_name=FEATURES_SUITE_NAME
    )


def _clean_dtypes() -> dict[str, str]:
    """The clean stage's empty table is the schema: every column, with its dtype."""
    return {column: str(dtype) for column, dtype in rows_to_frame([]).dtypes.items()}


def _schema_expectations(dtypes: dict[str, str]) -> list[gxe.Expectation]:
    """Each column exists with its dtype; text is held as object, so its non-null values must be str."""
    exists = [gxe.ExpectColumnToExist(column=column) for column in dtypes]
    types = [
        gxe.ExpectColumnValuesToBeOfType(column=column, type_="str")
        if dtype == "object"
        else gxe.ExpectColumnTypeToBe(column=column, type_=dtype)
        for column, dtype in dtypes.items()
    ]
    return [*exists, *types]


def _open_context(gx_dir: Path) -> FileDataContext:
    """Open (scaffolding on first use) the file context, with progress bars and analytics off."""
    gx_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", context_root_dir=gx_dir)
    bars = context.variables.progress_bars
    bars_off = bars is not None and bars.get("globally") is False and bars.get("metric_calculations") is False
    if not bars_off or context.variables.analytics_enabled is not False:
        # Saved in great_expectations.yml, so the setting also holds for the CLI and notebooks.
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        context.variables.analytics_enabled = False
        context.variables.save()
    return context


def _run_checkpoint(
    context: FileDataContext,
    asset_name: str,
    suite: gx.ExpectationSuite,
    frame: pd.DataFrame,
    batch_id: str,
    result_format: dict[str, Any],
) -> ExpectationSuiteValidationResult:
    """Run `suite` on `frame` through its checkpoint, which updates Data Docs; the suite, its
    validation definition and checkpoint (all named after the suite) are saved first if they changed."""
    checkpoint = _saved_checkpoint(context, asset_name, suite, result_format)
    if checkpoint is None:
        checkpoint = _save_checkpoint(context, asset_name, suite, result_format)
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=batch_id))
    (suite_result,) = result.run_results.values()
    return suite_result


def _saved_checkpoint(
    context: FileDataContext, asset_name: str, suite: gx.ExpectationSuite, result_format: dict[str, Any]
) -> gx.Checkpoint | None:
    """The stored checkpoint when it already runs this suite on this asset, else None.

    Saving unchanged objects is most of a run's cost: `add_or_update` compares every stored
    expectation with every new one (0.3 of 0.8 s for 600 rows), so compare the contents once here.
    """
    try:
        checkpoint = context.checkpoints.get(suite.name)
    except gx_exceptions.DataContextError:
        return None
    if len(checkpoint.validation_definitions) != 1:
        return None
    definition = checkpoint.validation_definitions[0]
    same = (
        definition.asset.name == asset_name
        and checkpoint.result_format == result_format
        and _expectation_contents(definition.suite) == _expectation_contents(suite)
    )
    return checkpoint if same else None


def _expectation_contents(suite: gx.ExpectationSuite) -> list[dict[str, Any]]:
    """What an expectation checks, without the id the store gives it."""
    return [
        {key: value for key, value in expectation.configuration.to_json_dict().items() if key != "id"}
        for expectation in suite.expectations
    ]


def _save_checkpoint(
    context: FileDataContext, asset_name: str, suite: gx.ExpectationSuite, result_format: dict[str, Any]
) -> gx.Checkpoint:
    """Find-or-create the datasource, the table's asset and batch definition; add-or-update the rest."""
    try:
        datasource = cast(PandasDatasource, context.data_sources.get(_DATASOURCE_NAME))
    except KeyError:  # not `add_or_update_pandas`: that drops the other tables' assets
        datasource = context.data_sources.add_pandas(name=_DATASOURCE_NAME)
    try:
        asset = datasource.get_asset(asset_name)
    except LookupError:
        asset = datasource.add_dataframe_asset(name=asset_name)
    try:
        batch_definition = asset.get_batch_definition(_BATCH_DEFINITION_NAME)
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION_NAME)

    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=suite)
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=suite.name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[_DOCS_SITE])],
            result_format=result_format,
        )
    )


def _raise_on_expectation_errors(suite_result: ExpectationSuiteValidationResult) -> None:
    """GX reports an expectation that crashed as merely unsuccessful; that is a bug, not bad data."""
    errors = [
        f"{expectation_name(result.expectation_config)}: {message}"
        for result in suite_result.results
        for message in _exception_messages(result)
    ]
    if errors:
        raise RuntimeError(f"expectations raised instead of evaluating: {errors}")


def _exception_messages(result: ExpectationValidationResult) -> list[str]:
    """GX puts an expectation's own exception at the top of `exception_info`, a metric's one level down."""
    info = result.exception_info or {}
    entries = [info] if "raised_exception" in info else [entry for entry in info.values() if isinstance(entry, dict)]
    return [str(entry.get("exception_message")) for entry in entries if entry.get("raised_exception")]


def _config(result: ExpectationValidationResult) -> ExpectationConfiguration:
    if result.expectation_config is None:  # typed optional by GX, but every result of a suite run carries one
        raise ValueError("a validation result has no expectation configuration")
    return result.expectation_config


def _reject_on_schema_failures(suite_result: ExpectationSuiteValidationResult, batch_id: str) -> None:
    """A failure that names no rows is about the table (a missing column, a wrong dtype)."""
    failures = [
        result
        for result in suite_result.results
        if not result.success and not _exception_messages(result) and "unexpected_index_list" not in result.result
    ]
    if not failures:
        return
    failures.sort(key=lambda result: _config(result).type != "expect_column_to_exist")  # the root cause first
    names = [expectation_name(result.expectation_config) for result in failures]
    config = _config(failures[0])
    missing = config.type == "expect_column_to_exist"
    observed = "absent" if missing else str(failures[0].result.get("observed_value"))
    bound = "present" if missing else str(config.kwargs.get("type_"))
    raise BatchRejected(
        f"batch {batch_id!r} rejected: {names[0]} failed: observed {observed!r}, expected {bound!r};"
        f" the table does not have the schema its suite expects ({len(names)} schema failures: {names})",
        expectation=names[0],
        observed=observed,
        bound=bound,
        sample_ids=[],
    )


def _reject_unusable_ids(rows: pd.DataFrame, batch_id: str) -> None:
    """Quarantine matches rows by their id as a string: a missing id, or one of another type, slips through."""
    null_ids = int(rows["sample_id"].isna().sum())
    if null_ids:  # the clean stage should have quarantined such rows
        raise BatchRejected(
            f"batch {batch_id!r} rejected: expect_column_values_to_not_be_null(sample_id) failed for"
            f" {null_ids} of {len(rows)} rows (allowed: 0); such rows should be quarantined as"
            " missing_field before validation",
            expectation="expect_column_values_to_not_be_null(sample_id)",
            observed=null_ids,
            bound=0,
            sample_ids=[],
        )
    odd_ids = rows.loc[~rows["sample_id"].map(lambda value: isinstance(value, str)), "sample_id"]
    if not odd_ids.empty:
        examples = odd_ids.head(_IDS_IN_MESSAGE).tolist()
        raise BatchRejected(
            f"batch {batch_id!r} rejected: expect_column_values_to_be_of_type(sample_id) failed for"
            f" {len(odd_ids)} of {len(rows)} rows (allowed: 0), e.g. {examples}",
            expectation="expect_column_values_to_be_of_type(sample_id)",
            observed=len(odd_ids),
            bound=0,
            sample_ids=[str(value) for value in examples],
        )


def _reject_on_reference_failures(
    suite_result: ExpectationSuiteValidationResult, rows: pd.DataFrame, profile: ReferenceProfile, batch_id: str
) -> None:
    """Name the first failure (row count, then means, then null shares) with its evidence, and list the others."""
    priority = {"expect_table_row_count_to_be_between": 0, "expect_column_mean_to_be_between": 1}
    failures = sorted(
        (result for result in suite_result.results if not result.success),
        key=lambda result: priority.get(_config(result).type, 2),
    )
    if not failures:
        return
    first, config = failures[0], _config(failures[0])
    others = [expectation_name(result.expectation_config) for result in failures[1:]]
    column: str | None = config.kwargs.get("column")
    ids: list[str] = []
    if config.type == "expect_column_values_to_not_be_null":
        observed = first.result["unexpected_count"] / first.result["element_count"]
        bound = _round(1.0 - config.kwargs["mostly"])
        ids = [str(entry["sample_id"]) for entry in first.result.get("partial_unexpected_index_list") or []]
        evidence = (
            f"null share {observed:.1%} above the bound {bound:.1%} (reference {profile.null_shares[str(column)]:.1%});"
            f" e.g. sample_ids {ids[:_IDS_IN_MESSAGE]}"
        )
    else:  # a row count or a mean out of its [min_value, max_value]
        observed = float(first.result["observed_value"])
        below = observed < config.kwargs["min_value"]
        bound = float(config.kwargs["min_value" if below else "max_value"])
        evidence = f"observed {observed:.4g}, {'below' if below else 'above'} the bound {bound:.4g} [{config.notes}]"
        if column is not None:
            center = profile.columns[column].center
            ids = _furthest_ids(rows, column, center, toward_low=below)
            evidence += f"; rows furthest from the reference mean {center:.4g}: sample_ids {ids}"
    raise BatchRejected(
        f"batch {batch_id!r} rejected by {REFERENCE_SUITE_NAME} (reference: {len(profile.batch_ids)} batches,"
        f" {profile.rows} rows): {expectation_name(config)} {evidence}" + (f"; also failed: {others}" if others else ""),
        expectation=expectation_name(config),
        observed=observed,
        bound=bound,
        sample_ids=ids[:_IDS_IN_MESSAGE],
    )


def _furthest_ids(rows: pd.DataFrame, column: str, center: float, toward_low: bool) -> list[str]:
    """The rows that pull the mean furthest out of bounds: furthest from `center` on the failing side."""
    distance = (pd.to_numeric(rows[column], errors="coerce").astype(float) - center) * (-1 if toward_low else 1)
    furthest = distance.dropna().nlargest(_IDS_IN_MESSAGE).index
    return rows.loc[furthest, "sample_id"].astype(str).tolist()


def _failing_ids_by_expectation(suite_result: ExpectationSuiteValidationResult) -> dict[str, list[str]]:
    """Expectation name -> sample_ids of its failing rows (in row order, duplicates kept once)."""
    by_expectation: dict[str, list[str]] = {}
    for result in suite_result.results:
        if result.success:
            continue
        entries = result.result.get("unexpected_index_list") or []
        ids = [entry["sample_id"] for entry in entries if entry.get("sample_id") is not None]
        by_expectation[expectation_name(result.expectation_config)] = list(dict.fromkeys(map(str, ids)))
    return by_expectation


def _failed_by_sample(ids_by_expectation: dict[str, list[str]]) -> dict[str, list[str]]:
    failed: dict[str, list[str]] = {}
    for name, ids in ids_by_expectation.items():
        for sample_id in ids:
            failed.setdefault(sample_id, []).append(name)
    return failed


def _reject_if_too_many_bad(
    bad_rows: int,
    total_rows: int,
    ids_by_expectation: dict[str, list[str]],
    params: ValidateParams,
    batch_id: str,
) -> None:
    share = bad_rows / total_rows
    if share <= params.max_bad_row_share:
        return
    counts = Counter({name: len(ids) for name, ids in ids_by_expectation.items()})
    worst, worst_count = counts.most_common(1)[0]
    examples = ids_by_expectation[worst][:_IDS_IN_MESSAGE]
    raise BatchRejected(
        f"batch {batch_id!r} rejected: {bad_rows} of {total_rows} rows ({share:.1%}) fail row-level"
        f" expectations, above max_bad_row_share={params.max_bad_row_share:.1%}; most failures:"
        f" {worst} ({worst_count} rows), e.g. sample_ids {examples}",
        expectation=worst,
        observed=share,
        bound=params.max_bad_row_share,
        sample_ids=examples,
    )


def _data_docs_index(context: FileDataContext) -> Path | None:
    for site in context.get_docs_sites_urls(site_name=_DOCS_SITE):
        url = site.get("site_url")
        if url and url.startswith("file://"):
            return Path(unquote(urlparse(url).path))
    return None


def _statistics(suite_result: ExpectationSuiteValidationResult) -> dict[str, Any]:
    return {key: _plain(value) for key, value in suite_result.statistics.items()}


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so statistics serialise as JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _round(value: float) -> float:
    """Six significant digits: bounds read cleanly in Data Docs and the suite JSON."""
    return float(f"{value:.6g}")

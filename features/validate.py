"""Great Expectations validation of the clean rows table: row-level failures to quarantine,
batch-level rejection when too much of a batch is bad.

The suite is built in code from `ValidateParams` (a params change is a suite change, saved
with `add_or_update`), run through a Checkpoint so that every batch leaves a validation
result and a Data Docs page behind in the file-mode context at `gx_dir`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context import FileDataContext
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

SUITE_NAME = "clean_rows"
_DATASOURCE_NAME = "flywheel"
_ASSET_NAME = "clean_rows"
_BATCH_DEFINITION_NAME = "whole_table"  # the caller hands one in-memory frame per batch
_CHECKPOINT_NAME = "clean_rows"
_DOCS_SITE = "local_site"  # the site a file-mode context scaffolds
_IDS_IN_MESSAGE = 5

# COMPLETE lists every failing row; the id column turns row positions into sample_ids.
_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": ["sample_id"],
    "return_unexpected_index_query": False,  # a pandas snippet per expectation, unused here
}

REQUIRED_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "captured_at",
    "language",
    "label",
    "image_width",
    "image_height",
    "image_contrast",
    "audio_seconds",
    "caption_chars",
)


@dataclass(frozen=True)
class ValidateParams:
    """Bounds of the clean rows suite; one object per run, built from params.yaml."""

    languages: tuple[str, ...] = ("en", "de", "fr", "es")  # languages the text encoder is trained for
    labels: tuple[int, ...] = tuple(range(10))  # the digit classes
    min_audio_seconds: float = 0.1  # shorter clips hold no spoken digit
    max_audio_seconds: float = 10.0  # longer clips are recordings gone wrong
    min_image_side: int = 8  # the model's input size; smaller images cannot be upscaled honestly
    min_image_contrast: float = 0.02  # pixel std / 255; below this the image is blank
    max_caption_chars: int = 500  # longer captions are pasted documents, not captions
    max_bad_row_share: float = 0.2  # batch-level: more failing rows than this stops the run

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


@dataclass
class ValidationOutcome:
    """What the caller needs from one validation: the ids to quarantine and the evidence."""

    failed: dict[str, list[str]]  # sample_id -> names of the row-level expectations it failed
    statistics: dict[str, Any]  # GX's expectation counts and success percent, plus row counts
    data_docs: Path | None  # local path of the Data Docs index.html
    suite_name: str


class BatchRejected(Exception):
    """The batch as a whole is unfit: quarantining its bad rows would hide a broken source."""

    def __init__(
        self,
        message: str,
        *,
        expectation: str,
        observed: float,
        bound: float,
        sample_ids: list[str],
    ) -> None:
        super().__init__(message)
        self.expectation = expectation
        self.observed = observed
        self.bound = bound
        self.sample_ids = sample_ids


def build_suite(params: ValidateParams) -> gx.ExpectationSuite:
    """The row-level expectations; nulls pass wherever a column is optional (GX skips them)."""
    expectations = [
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


def expectation_name(config: ExpectationConfiguration | None) -> str:
    """Stable, readable name used as the quarantine detail, e.g. `expect_..._between(audio_seconds)`."""
    if config is None:  # typed optional by GX, but every result of a suite run carries its config
        raise ValueError("a validation result has no expectation configuration to name it by")
    column = config.kwargs.get("column")
    return f"{config.type}({column})" if column else config.type


def validate_rows(rows: pd.DataFrame, gx_dir: Path, params: ValidateParams, batch_id: str) -> ValidationOutcome:
    """Validate one batch of clean rows; return the failing ids, or raise BatchRejected.

    Writes the suite, the validation result and Data Docs under `gx_dir` (created if missing).
    `rows` is not modified.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in rows.columns]
    if missing:
        raise ValueError(f"clean rows lack columns {missing}; expected at least {list(REQUIRED_COLUMNS)}")
    if rows.empty:
        raise BatchRejected(
            f"batch {batch_id!r} rejected: the clean rows table is empty",
            expectation="non_empty_table",
            observed=0,
            bound=1,
            sample_ids=[],
        )

    context = _open_context(gx_dir)
    checkpoint = _save_checkpoint(context, build_suite(params))
    checkpoint_result = checkpoint.run(
        batch_parameters={"dataframe": rows}, run_id=RunIdentifier(run_name=batch_id)
    )
    (suite_result,) = checkpoint_result.run_results.values()
    _raise_on_expectation_errors(suite_result)
    null_ids = int(rows["sample_id"].isna().sum())
    if null_ids:
        # A row without an id cannot be quarantined by id; the clean stage should have caught it.
        raise BatchRejected(
            f"batch {batch_id!r} rejected: expect_column_values_to_not_be_null(sample_id) failed for"
            f" {null_ids} of {len(rows)} rows (allowed: 0); such rows should be quarantined as"
            " missing_field before validation",
            expectation="expect_column_values_to_not_be_null(sample_id)",
            observed=null_ids,
            bound=0,
            sample_ids=[],
        )

    ids_by_expectation = _failing_ids_by_expectation(suite_result)
    failed = _failed_by_sample(ids_by_expectation)
    bad_rows = int(rows["sample_id"].isin(failed.keys()).sum())
    statistics = {
        **{key: _plain(value) for key, value in suite_result.statistics.items()},
        "rows": len(rows),
        "failed_rows": bad_rows,
    }
    _reject_if_too_many_bad(bad_rows, len(rows), ids_by_expectation, params, batch_id)
    return ValidationOutcome(
        failed=failed,
        statistics=statistics,
        data_docs=_data_docs_index(context),
        suite_name=SUITE_NAME,
    )


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


def _save_checkpoint(context: FileDataContext, suite: gx.ExpectationSuite) -> gx.Checkpoint:
    """Find-or-create datasource, asset and batch definition; add-or-update suite and checkpoint."""
    datasource = context.data_sources.add_or_update_pandas(name=_DATASOURCE_NAME)
    try:
        asset = datasource.get_asset(_ASSET_NAME)
    except LookupError:
        asset = datasource.add_dataframe_asset(name=_ASSET_NAME)
    try:
        batch_definition = asset.get_batch_definition(_BATCH_DEFINITION_NAME)
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION_NAME)

    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=SUITE_NAME, data=batch_definition, suite=suite)
    )
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=_CHECKPOINT_NAME,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[_DOCS_SITE])],
            result_format=_RESULT_FORMAT,
        )
    )


def _raise_on_expectation_errors(suite_result: ExpectationSuiteValidationResult) -> None:
    """GX reports an expectation that crashed as merely unsuccessful; that is a bug, not bad data."""
    errors = [
        f"{expectation_name(result.expectation_config)}: {result.exception_info.get('exception_message')}"
        for result in suite_result.results
        if result.exception_info and result.exception_info.get("raised_exception")
    ]
    if errors:
        raise RuntimeError(f"expectations raised instead of evaluating: {errors}")


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


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so statistics serialise as JSON."""
    return value.item() if hasattr(value, "item") else value

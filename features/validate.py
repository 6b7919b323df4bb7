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

import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlparse

import great_expectations as gx
import great_expectations.exceptions as gx_exceptions
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
from great_expectations.execution_engine import pandas_execution_engine

from features.clean_row import is_arrow_text
from features.data_docs import localize_data_docs
from features.expectations import (
    FEATURE_RANGES,
    FEATURES_SUITE_NAME,
    IDS_IN_MESSAGE,
    REFERENCE_SUITE_NAME,
    SUITE_NAME,
    BatchRejected,
    ValidateParams,
    build_features_suite,
    build_suite,
    expectation_name,
    result_config,
)
from features.gx_session import CONFIG_FOLDERS, gx_session
from features.gx_views import name_views
from features.io import save_json
from features.manifest import reads_as_time
from features.memory import table_allocation
from features.reference import build_reference_profile, build_reference_suite, reject_on_reference_failures

__all__ = [  # the suites' names and parameters live in features.expectations; validation runs here
    "FEATURE_RANGES", "FEATURES_SUITE_NAME", "REFERENCE_SUITE_NAME", "SUITE_NAME", "BatchRejected",
    "ValidateParams", "ValidationOutcome", "build_reference_profile", "validate_features", "validate_rows",
]

logger = logging.getLogger("flywheel.validate")
PROFILES_DIR = "profiles"  # under gx_dir: the reference profile each batch was checked against
_DATASOURCE_NAME = "flywheel"
_BATCH_DEFINITION_NAME = "whole_table"  # the caller hands one in-memory frame per batch
_DOCS_SITE = "local_site"  # the site a file-mode context scaffolds

# COMPLETE lists every failing row; the id column turns row positions into sample_ids.
_ROW_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": ["sample_id"],
    "return_unexpected_index_query": False,  # a pandas snippet per expectation, unused here
}
# Batch-level suites need only a few example rows, not every null of every column.
_BATCH_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": IDS_IN_MESSAGE,
    "unexpected_index_column_names": ["sample_id"],
    "return_unexpected_index_query": False,
}

# GX fingerprints every in-memory batch (a hash of every value, kept as a batch marker in the result) when the
# frame's shallow size is under this threshold. flywheel reads no marker, and the hash makes a Python string of
# every value of an Arrow-backed text column: at 100k clean rows, 16 MB of validation's 22 MB peak over its start
# and the time to hash each column (docs/reference/testing.md, session 21). A threshold of 0 skips it, for every
# pandas batch GX validates in this process; the name is GX 1.x's (tests/unit/test_validate.py fails when an
# upgrade renames it).
pandas_execution_engine.HASH_THRESHOLD = 0


@dataclass
class ValidationOutcome:
    """What the caller needs from one validation: the ids to quarantine and the evidence."""

    failed: dict[str, list[str]]  # sample_id -> names of the row-level expectations it failed
    statistics: dict[str, Any]  # GX's expectation counts and success percent, plus row counts
    data_docs: Path | None  # local path of the Data Docs index.html
    suite_name: str
    reference_profile: Path | None = None  # the profile JSON the batch was checked against; None: no reference
    data_docs_page: Path | None = None  # local path of this validation's own Data Docs page (the row-level suite's)



@table_allocation()  # GX's copies of the table, each unmapped when freed
def validate_rows(
    rows: pd.DataFrame,
    gx_dir: Path,
    params: ValidateParams,
    batch_id: str,
    *,
    reference: pd.DataFrame | None = None,
    run_name: str | None = None,
) -> ValidationOutcome:
    """Validate one batch of clean rows; return the failing ids, or raise BatchRejected.

    `reference`: clean rows of earlier accepted batches with a `batch_id` column, oldest first
    (None on the first batch). `run_name`: the GX run name of the results (the Data Docs "Run Name"
    column), flywheel's run id so that a result is found by it; None: the batch id. Writes suites, validation results, the reference profile and
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
    with gx_session(gx_dir):  # GX's config writes undone if a kill cuts one off
        context = _open_context(gx_dir, params.data_docs_index_results)
        run_name = run_name or batch_id
        identifier, suite_result = _run_checkpoint(context, SUITE_NAME, build_suite(params), rows, run_name,
                                                   _ROW_RESULT_FORMAT)
        page = _result_page(context, identifier)
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
            _, result = _run_checkpoint(context, REFERENCE_SUITE_NAME, suite, accepted, run_name, _BATCH_RESULT_FORMAT)
            _raise_on_expectation_errors(result)
            reject_on_reference_failures(result, accepted, profile, batch_id)
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
            data_docs_page=page,
        )


@table_allocation()
def validate_features(features: pd.DataFrame, gx_dir: Path, batch_id: str, index_results: int) -> ValidationOutcome:
    """Validate the feature table of one batch; return the rows out of range, or raise
    BatchRejected when its schema is not the transform's. `index_results`: as ValidateParams.data_docs_index_results."""
    with gx_session(gx_dir):
        context = _open_context(gx_dir, index_results)
        _, suite_result = _run_checkpoint(
            context, FEATURES_SUITE_NAME, build_features_suite(), features, batch_id, _ROW_RESULT_FORMAT
        )
        _reject_on_schema_failures(suite_result, batch_id)
        _raise_on_expectation_errors(suite_result)
        failed = _failed_by_sample(_failing_ids_by_expectation(suite_result))
        statistics = {**_statistics(suite_result), "rows": len(features), "failed_rows": len(failed)}
        return ValidationOutcome(
            failed=failed, statistics=statistics, data_docs=_data_docs_index(context), suite_name=FEATURES_SUITE_NAME
        )


def _set_aside_unreadable_configs(gx_dir: Path) -> None:
    """GX writes its suites, validation definitions and checkpoints in place, so a run killed mid-write
    can leave a cut-off JSON file, and every later context refuses to open ("Unterminated string").
    All three are derived from params.yaml and saved again by this run, and the latter two name the
    suite by id, so when one of a suite's objects is unreadable all three (named after the suite) are
    renamed aside (`<name>.json.unreadable`, kept for inspection) and logged, never read again."""
    unreadable: dict[str, str] = {}
    for folder in CONFIG_FOLDERS:
        for path in sorted((gx_dir / folder).glob("*.json")):
            try:
                json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError) as err:
                unreadable.setdefault(path.stem, f"{folder}/{path.name}: {err}")
    for name, why in unreadable.items():
        for folder in CONFIG_FOLDERS:
            path = gx_dir / folder / f"{name}.json"
            if path.exists():
                os.replace(path, path.with_name(path.name + ".unreadable"))
        logger.warning("GX config of suite %r was unreadable (%s; probably a run killed mid-write): its suite, "
                       "validation definition and checkpoint are set aside as *.json.unreadable and saved again "
                       "from params.yaml", name, why)


def _open_context(gx_dir: Path, index_results: int) -> FileDataContext:
    """Open (scaffolding on first use) the file context, with progress bars and analytics off and the Data Docs
    index listing the latest `index_results` validation results: GX reads every result it lists to build the
    index at each checkpoint run, so an unbounded index made each validation slower than the one before. The
    site's pages are rendered by GX's views on a template cache of the process (features/gx_views.py)."""
    gx_dir.mkdir(parents=True, exist_ok=True)
    _set_aside_unreadable_configs(gx_dir)
    context = gx.get_context(mode="file", context_root_dir=gx_dir)
    bars = context.variables.progress_bars
    bars_off = bars is not None and bars.get("globally") is False and bars.get("metric_calculations") is False
    sites = context.variables.data_docs_sites or {}
    site = sites.get(_DOCS_SITE)
    index = site.get("site_index_builder") if site else None
    index_limited = index is None or index.get("validation_results_limit") == index_results
    views_named = site is not None and name_views(site)  # True: the site named other views until now
    if not bars_off or context.variables.analytics_enabled is not False or not index_limited or views_named:
        # Saved in great_expectations.yml, so the settings also hold for the CLI and notebooks.
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        context.variables.analytics_enabled = False
        if not index_limited:
            index["validation_results_limit"] = index_results
        if not index_limited or views_named:
            context.variables.data_docs_sites = sites
        context.variables.save()
    return context


def _run_checkpoint(
    context: FileDataContext,
    asset_name: str,
    suite: gx.ExpectationSuite,
    frame: pd.DataFrame,
    run_name: str,
    result_format: dict[str, Any],
) -> tuple[Any, ExpectationSuiteValidationResult]:
    """Run `suite` on `frame` through its checkpoint, which updates Data Docs (then pointed at local copies of
    their scripts: features/data_docs.py); the suite, its validation definition and checkpoint (all named after
    the suite) are saved first if they changed. Returns the result's store identifier and the result."""
    checkpoint = _saved_checkpoint(context, asset_name, suite, result_format)
    if checkpoint is None:
        checkpoint = _save_checkpoint(context, asset_name, suite, result_format)
    # GX reads its run name for a time (dateutil), to stamp the result when no time is given and to title its
    # Data Docs page, and fails on a name that reads as one out of range: the time is given, and such a name (a
    # numeric batch id overflows; run ids never read as a time, flows/run_record.py) gets a prefix.
    name = f"batch-{run_name}" if reads_as_time(run_name) else run_name
    run_id = RunIdentifier(run_name=name, run_time=datetime.now(timezone.utc))
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    index = _data_docs_index(context)
    if index is not None:  # before any rejection: a rejected batch's result page is the one a user opens
        localize_data_docs(index.parent)
    ((identifier, suite_result),) = result.run_results.items()
    return identifier, suite_result


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

    # The suite saved once: GX's `add_or_update` of a validation definition saves its suite again, and a
    # checkpoint's saves its definitions again, each comparing every stored expectation with every new one
    # (0.2-0.5 s of a validation that saves them, 39 rows, measured on a busy machine). Here each object is
    # added, or updated under its id; the files written are the same, ids apart.
    suite = context.suites.add_or_update(suite)
    definition = _added_or_updated(context.validation_definitions,
                                   gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=suite))
    return _added_or_updated(context.checkpoints, gx.Checkpoint(
        name=suite.name,
        validation_definitions=[definition],
        actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[_DOCS_SITE])],
        result_format=result_format,
    ))


def _added_or_updated(factory: Any, item: Any) -> Any:
    """`item` (a validation definition or a checkpoint) stored under its name: added, or saved under the stored
    one's id. Not GX's `add_or_update`, which saves the objects it refers to again (see `_save_checkpoint`)."""
    try:
        stored = factory.get(item.name)
    except gx_exceptions.DataContextError:
        return factory.add(item)
    item.id = stored.id
    item.save()
    return item


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


def _reject_on_schema_failures(suite_result: ExpectationSuiteValidationResult, batch_id: str) -> None:
    """A failure that names no rows is about the table (a missing column, a wrong dtype)."""
    failures = [
        result
        for result in suite_result.results
        if not result.success and not _exception_messages(result) and "unexpected_index_list" not in result.result
    ]
    if not failures:
        return
    failures.sort(key=lambda result: result_config(result).type != "expect_column_to_exist")  # the root cause first
    names = [expectation_name(result.expectation_config) for result in failures]
    config = result_config(failures[0])
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
    if is_arrow_text(rows["sample_id"]):
        return  # the clean stage's table: strings only, no Python object a row to check
    odd_ids = rows.loc[~rows["sample_id"].map(lambda value: isinstance(value, str)), "sample_id"]
    if not odd_ids.empty:
        examples = odd_ids.head(IDS_IN_MESSAGE).tolist()
        raise BatchRejected(
            f"batch {batch_id!r} rejected: expect_column_values_to_be_of_type(sample_id) failed for"
            f" {len(odd_ids)} of {len(rows)} rows (allowed: 0), e.g. {examples}",
            expectation="expect_column_values_to_be_of_type(sample_id)",
            observed=len(odd_ids),
            bound=0,
            sample_ids=[str(value) for value in examples],
        )


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
    examples = ids_by_expectation[worst][:IDS_IN_MESSAGE]
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


def _result_page(context: FileDataContext, identifier: Any) -> Path | None:
    """The Data Docs page of one validation result (local_site/validations/<suite>/<run name>/<time>/<batch>.html)."""
    for site in context.get_docs_sites_urls(resource_identifier=identifier, site_name=_DOCS_SITE):
        url = site.get("site_url")
        if url and url.startswith("file://"):
            return Path(unquote(urlparse(url).path))
    return None


def _statistics(suite_result: ExpectationSuiteValidationResult) -> dict[str, Any]:
    return {key: _plain(value) for key, value in suite_result.statistics.items()}


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so statistics serialise as JSON."""
    return value.item() if isinstance(value, np.generic) else value



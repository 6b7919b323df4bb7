"""Reference bounds: what earlier accepted batches say a new batch should look like.

`ReferenceProfile` holds per-batch sizes and means, pooled spread and null shares of the
latest accepted batches (saved as JSON beside the validation results); `build_reference_suite`
turns it into the `clean_rows_reference` suite of row-count, mean and null-share bounds for one
batch, and `reject_on_reference_failures` names the first bound a batch broke, with evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult

from features.expectations import (
    IDS_IN_MESSAGE,
    REFERENCE_SUITE_NAME,
    BatchRejected,
    ValidateParams,
    clean_dtypes,
    expectation_name,
    result_config,
    round_bound,
)

_NEVER_NULL = ("sample_id", "captured_at")  # row-level not-null rules; no null share to bound
_MAD_TO_STD = 1.4826  # MAD x this estimates the standard deviation of normally distributed values


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
        for column in clean_dtypes()
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
    return round_bound(stats.center - shift - noise), round_bound(stats.center + shift + noise)


def null_share_bound(reference_share: float, rows: int, params: ValidateParams) -> float:
    """Largest null share allowed in a batch of `rows`: the reference share plus sampling noise
    (k binomial standard errors) plus `null_share_tolerance`. Only an upper bound: a column that
    fills up (a source adding audio) is not a broken source."""
    noise = params.tolerance_sigmas * math.sqrt(reference_share * (1.0 - reference_share) / rows)
    return round_bound(reference_share + noise + params.null_share_tolerance)


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
                    mostly=round_bound(1.0 - bound),
                    notes=f"null share at most {bound:.1%}: reference {share:.1%} + sampling noise"
                    f" + {params.null_share_tolerance:.0%}",
                )
            )
    return gx.ExpectationSuite(name=REFERENCE_SUITE_NAME, expectations=expectations)


def reject_on_reference_failures(
    suite_result: ExpectationSuiteValidationResult, rows: pd.DataFrame, profile: ReferenceProfile, batch_id: str
) -> None:
    """Name the first failure (row count, then means, then null shares) with its evidence, and list the others."""
    priority = {"expect_table_row_count_to_be_between": 0, "expect_column_mean_to_be_between": 1}
    failures = sorted(
        (result for result in suite_result.results if not result.success),
        key=lambda result: priority.get(result_config(result).type, 2),
    )
    if not failures:
        return
    first, config = failures[0], result_config(failures[0])
    others = [expectation_name(result.expectation_config) for result in failures[1:]]
    column: str | None = config.kwargs.get("column")
    ids: list[str] = []
    if config.type == "expect_column_values_to_not_be_null":
        observed = first.result["unexpected_count"] / first.result["element_count"]
        bound = round_bound(1.0 - config.kwargs["mostly"])
        ids = [str(entry["sample_id"]) for entry in first.result.get("partial_unexpected_index_list") or []]
        evidence = (
            f"null share {observed:.1%} above the bound {bound:.1%} (reference {profile.null_shares[str(column)]:.1%});"
            f" e.g. sample_ids {ids[:IDS_IN_MESSAGE]}"
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
        sample_ids=ids[:IDS_IN_MESSAGE],
    )


def _furthest_ids(rows: pd.DataFrame, column: str, center: float, toward_low: bool) -> list[str]:
    """The rows that pull the mean furthest out of bounds: furthest from `center` on the failing side."""
    distance = (pd.to_numeric(rows[column], errors="coerce").astype(float) - center) * (-1 if toward_low else 1)
    furthest = distance.dropna().nlargest(IDS_IN_MESSAGE).index
    return rows.loc[furthest, "sample_id"].astype(str).tolist()

"""The expectation suites of the pipeline's tables and the parameters that bound them.

Suites are built in code from `ValidateParams` (a params change is a suite change); running
them, quarantining and rejecting is `features.validate`'s job, and the bounds taken from
reference batches are `features.reference`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from features.clean import rows_to_frame
from features.transform import CATEGORICAL_FEATURES, NUMERIC_FEATURES

if TYPE_CHECKING:  # GX takes seconds to import: only the functions that build suites import it
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

SUITE_NAME = "clean_rows"
REFERENCE_SUITE_NAME = "clean_rows_reference"
FEATURES_SUITE_NAME = "sample_features"
IDS_IN_MESSAGE = 5  # example sample_ids quoted in a rejection message

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
    "cap_letter_share": (0.0, 1.0),  # a share of the caption's characters
}


@dataclass(frozen=True)
class ValidateParams:
    """Bounds of the clean rows suites; one object per run, built from params.yaml's `validate:` (whose
    defaults and reasons live in flows/settings.py, declared once) and the task."""

    n_classes: int  # the task's classes: a label is a class index 0..n_classes-1
    languages: tuple[str, ...] | None  # the task's caption languages; None: no language expectation
    min_audio_seconds: float
    max_audio_seconds: float
    min_image_side: int
    min_image_contrast: float  # pixel std / 255
    max_caption_chars: int
    max_bad_row_share: float  # batch-level: more failing rows than this stops the run
    min_batch_rows_factor: float  # fewer rows than this x the median reference batch
    max_batch_rows_factor: float  # more than this x the median
    max_mean_shift_stds: float  # a batch mean this many reference stds off
    min_mean_shift_share: float  # that allowance is at least this share of |reference mean| (constant columns)
    tolerance_sigmas: float  # standard errors of sampling noise allowed on top, for means and null shares
    null_share_tolerance: float  # extra share of nulls allowed in a column beyond the reference's
    distribution_columns: tuple[str, ...]  # numeric columns whose batch mean is bounded
    min_reference_rows: int  # a thinner reference bounds nothing: reference checks skipped
    reference_batches: int  # the latest accepted batches that make up the reference
    data_docs_index_results: int  # validation results the Data Docs index lists, newest first

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_row_share <= 1.0:
            raise ValueError(f"max_bad_row_share must be in [0, 1], got {self.max_bad_row_share}")
        if not 0.0 <= self.min_audio_seconds < self.max_audio_seconds:
            raise ValueError(
                "need 0 <= min_audio_seconds < max_audio_seconds, got"
                f" {self.min_audio_seconds} and {self.max_audio_seconds}"
            )
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2 (the task's classes), got {self.n_classes}")
        if self.languages is not None and not self.languages:
            raise ValueError("languages must name at least one language, or be None for no language check; got ()")
        if not 0.0 <= self.min_batch_rows_factor <= 1.0 <= self.max_batch_rows_factor:
            raise ValueError(
                "need 0 <= min_batch_rows_factor <= 1 <= max_batch_rows_factor, got"
                f" {self.min_batch_rows_factor} and {self.max_batch_rows_factor}"
            )
        tolerances = ("max_mean_shift_stds", "min_mean_shift_share", "tolerance_sigmas", "null_share_tolerance")
        negative = {name: getattr(self, name) for name in tolerances if getattr(self, name) < 0}
        if negative:
            raise ValueError(f"{', '.join(negative)} must be >= 0, got {negative}")
        numeric = [column for column, dtype in clean_dtypes().items() if dtype in ("Int64", "float64")]
        unknown = [column for column in self.distribution_columns if column not in numeric]
        if unknown:
            raise ValueError(f"distribution_columns {unknown} are not numeric clean columns; accepted: {numeric}")
        if self.min_reference_rows < 2 or self.reference_batches < 1:
            raise ValueError(
                "need min_reference_rows >= 2 and reference_batches >= 1, got"
                f" {self.min_reference_rows} and {self.reference_batches}"
            )


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


def build_suite(params: ValidateParams) -> gx.ExpectationSuite:
    """Schema, then the row-level expectations; nulls pass wherever a column is optional (GX skips them)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations = [
        *schema_expectations(clean_dtypes()),
        gxe.ExpectColumnValuesToNotBeNull(column="sample_id"),
        gxe.ExpectColumnValuesToBeUnique(column="sample_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="captured_at"),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(params.n_classes))),
        *([] if params.languages is None
          else [gxe.ExpectColumnValuesToBeInSet(column="language", value_set=list(params.languages))]),
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
    import great_expectations as gx
    import great_expectations.expectations as gxe

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
        *schema_expectations(dtypes),
        gxe.ExpectColumnValuesToNotBeNull(column="sample_id"),
        gxe.ExpectColumnValuesToBeUnique(column="sample_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="event_timestamp"),
        *ranges,
    ]
    return gx.ExpectationSuite(name=FEATURES_SUITE_NAME, expectations=expectations)


def expectation_name(config: ExpectationConfiguration | None) -> str:
    """Stable, readable name used as the quarantine detail, e.g. `expect_..._between(audio_seconds)`."""
    if config is None:  # typed optional by GX, but every result of a suite run carries its config
        raise ValueError("a validation result has no expectation configuration to name it by")
    column = config.kwargs.get("column")
    return f"{config.type}({column})" if column else config.type


def result_config(result: ExpectationValidationResult) -> ExpectationConfiguration:
    """The configuration of the expectation a result is for."""
    if result.expectation_config is None:  # typed optional by GX, but every result of a suite run carries one
        raise ValueError("a validation result has no expectation configuration")
    return result.expectation_config


def clean_dtypes() -> dict[str, str]:
    """The clean stage's empty table is the schema: every column, with its dtype."""
    return {column: str(dtype) for column, dtype in rows_to_frame([]).dtypes.items()}


def schema_expectations(dtypes: dict[str, str]) -> list[gxe.Expectation]:
    """Each column exists with its dtype; text is held as object, so its non-null values must be str."""
    import great_expectations.expectations as gxe

    exists = [gxe.ExpectColumnToExist(column=column) for column in dtypes]
    types = [
        gxe.ExpectColumnValuesToBeOfType(column=column, type_="str")
        if dtype == "object"
        else gxe.ExpectColumnTypeToBe(column=column, type_=dtype)
        for column, dtype in dtypes.items()
    ]
    return [*exists, *types]


def round_bound(value: float) -> float:
    """Six significant digits: bounds read cleanly in Data Docs and the suite JSON."""
    return float(f"{value:.6g}")

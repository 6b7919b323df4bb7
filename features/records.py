"""Stage reports and quarantine records: the bookkeeping that keeps `rows_in = rows_out + rows_quarantined`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class QuarantineRecord:
    """One rejected row: which stage rejected it, a machine-readable reason code and a human detail."""

    sample_id: str | None  # None when the row was unreadable (bad JSON line)
    stage: str
    reason: str  # a code from REASONS, e.g. "missing_file"
    detail: str  # what was wrong, with the offending value
    row: dict[str, Any] = field(default_factory=dict)  # the raw row as it arrived, for replay
    batch_id: str | None = None  # filled in when read back from the quarantine folder of that batch


class BatchError(ValueError):
    """The landing batch as a whole cannot be read (no manifest, not JSON Lines); nothing was ingested."""


# Every reason code a stage may use; a code outside this table is a programming error.
REASONS: dict[str, str] = {
    "bad_json": "the manifest line is not one strict JSON object (NaN, Infinity and repeated keys are refused)",
    "bad_encoding": "the manifest line is not valid UTF-8, or a string holds an unpaired surrogate escape",
    "missing_field": "a required manifest field is absent or empty",
    "bad_field": "a field has the wrong type, e.g. a caption that is not a string or a file path that is a number",
    "bad_timestamp": "captured_at is not an ISO 8601 timestamp between 1678 and 2261",
    "bad_label": "the label is not an integer class (an int, or a float with no fraction) within int64",
    "unsafe_path": "a file path escapes the batch folder (.., absolute, or a link pointing out)",
    "missing_file": "a file named by the manifest does not exist or is not a readable regular file",
    "too_large": "the header of an image, audio clip or sensor array claims more than the configured limit",
    "corrupt_image": "the image cannot be decoded",
    "corrupt_audio": "the audio cannot be decoded, is truncated, empty or silent",
    "corrupt_sensor": "a .npy sensor array cannot be loaded (pickled objects are never loaded), has the wrong"
    " shape or dtype, or holds NaN or infinite values",
    "duplicate_sample": "the sample_id or the content was already seen; the first occurrence is kept",
    "near_duplicate": "the image is perceptually the same as a kept sample's and everything else is identical",
    "no_modality": "the row names no image, audio or caption",
    "failed_expectation": "a Great Expectations row-level expectation failed",
    "dropped_by_stage": "a project's own stage (params.yaml stages.extra) dropped the row; the detail says why",
}


@dataclass
class StageReport:
    """What a data stage did to a batch: counts in, out and quarantined, with reasons."""

    stage: str
    rows_in: int
    rows_out: int
    quarantined: list[QuarantineRecord] = field(default_factory=list)
    skipped: bool = False  # True when the stage found its output already present (idempotent re-run)
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for record in self.quarantined:
            if record.reason not in REASONS:
                raise ValueError(f"unknown quarantine reason {record.reason!r}; known: {sorted(REASONS)}")
        if self.rows_in != self.rows_out + len(self.quarantined):
            raise ValueError(
                f"stage {self.stage!r} lost rows: rows_in={self.rows_in} but rows_out={self.rows_out}"
                f" + rows_quarantined={len(self.quarantined)}"
            )

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantined)

    def reason_counts(self) -> dict[str, int]:
        return dict(Counter(record.reason for record in self.quarantined))

    def to_summary(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_quarantined": self.rows_quarantined,
            "reasons": self.reason_counts(),
            "skipped": self.skipped,
            **self.notes,
        }

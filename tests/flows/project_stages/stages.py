"""Stages a project adds by import path in params.yaml `stages.extra`; they import nothing of flywheel's core
but the result type."""

from __future__ import annotations

import json

import pandas as pd

from flows.stages import StageResult


def _metadata(rows: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """Each field from its column, or from the manifest's extra metadata (the clean rows' `meta` JSON)."""
    meta = rows["meta"].map(lambda m: json.loads(m) if isinstance(m, str) else {})
    return pd.DataFrame({f: rows[f] if f in rows.columns else meta.map(lambda m: m.get(f)) for f in fields})


def keep_one_per(rows: pd.DataFrame, context) -> StageResult:
    """Keep the first row of each combination of `context.params["fields"]`; say which row each dropped one repeats."""
    fields = list(context.params["fields"])
    values = _metadata(rows, fields).astype(str).agg(" / ".join, axis=1)
    first = ~values.duplicated()
    kept_for = dict(zip(values[first], rows.loc[first, "sample_id"]))
    reasons = {sid: f"same {', '.join(fields)} as {kept_for[value]}"
               for sid, value in zip(rows.loc[~first, "sample_id"], values[~first])}
    text = ("sample_id", "caption", "language", "meta")  # as a project's stage sees them: Python objects
    return StageResult(rows=rows[first], reasons=reasons, notes={"kept_combinations": int(first.sum()),
                                                                 "text_dtypes": sorted({str(rows[c].dtype) for c in text})})


def count_rows(rows: pd.DataFrame | None, context) -> dict:
    """A stage that only reports: the rows it saw."""
    return {"rows_seen": 0 if rows is None else len(rows), "batch_seen": context.batch_id}


def takes_nothing() -> None:
    """Not a stage: it cannot take (rows, context)."""

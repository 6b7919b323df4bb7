"""The task's own labelling functions (LFs), found by import path and turned into vote columns.

A user LF is a plain function `fn(row: dict) -> str | None`: it reads one clean row (its columns,
plus the manifest's other fields from `meta`, e.g. `row["caption"]`, `row["language"]`, `row["camera"]`)
and returns the name of the class it votes for, or None to abstain. params.yaml lists them as
`label.functions: ["mypkg.lfs:mentions_shape", ...]`; they are imported once at start-up
(`load_labelling_functions`), so a bad path stops the run before any batch is read.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.label_model import ABSTAIN
from features.task import Task, UnknownClass

PATH_FORM = "module.path:function"  # how params.yaml names an LF


@dataclass(frozen=True)
class LabellingFunction:
    name: str  # the function's own name: its vote column in provenance and in the LF statistics
    path: str  # as params.yaml wrote it, quoted in every error about it
    fn: Callable[[dict[str, Any]], Any]  # clean row -> class name, or None to abstain


def _import_one(path: str) -> LabellingFunction:
    where = f"label.functions: {path!r}"
    if not isinstance(path, str) or path.count(":") != 1:
        raise ValueError(f"{where} is not an import path; write {PATH_FORM!r}, e.g. 'mypkg.lfs:mentions_shape'")
    module_name, attribute = (part.strip() for part in path.split(":"))
    if not module_name or not attribute.isidentifier():
        raise ValueError(f"{where} is not an import path; write {PATH_FORM!r}, e.g. 'mypkg.lfs:mentions_shape'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:  # ModuleNotFoundError included
        raise ValueError(f"{where}: cannot import module {module_name!r} ({type(err).__name__}: {err}); is the "
                         "package installed, or its folder on the Python path?") from err
    try:
        fn = getattr(module, attribute)
    except AttributeError:
        public = sorted(name for name, value in vars(module).items() if callable(value) and not name.startswith("_")
                        and getattr(value, "__module__", None) == module.__name__)  # its own, not its imports
        raise ValueError(f"{where}: module {module_name!r} has no {attribute!r}; its functions: {public[:20]}") from None
    if not callable(fn):
        raise ValueError(f"{where} is a {type(fn).__name__}, not a function taking a row and returning a class name")
    return LabellingFunction(attribute, path, fn)


def load_labelling_functions(
    paths: Sequence[str], is_reserved: Callable[[str], bool] = lambda name: False
) -> list[LabellingFunction]:
    """Import each LF named by `paths`; ValueError naming the path when one cannot be imported, is not
    callable, or its function name is used twice or `is_reserved` (a built-in vote column's name)."""
    functions = [_import_one(path) for path in paths]
    seen: dict[str, str] = {}
    for lf in functions:
        if is_reserved(lf.name):
            raise ValueError(f"label.functions: {lf.path!r} is named {lf.name!r}, the name of a built-in vote column; "
                             "rename the function")
        if lf.name in seen:
            raise ValueError(f"label.functions: {seen[lf.name]!r} and {lf.path!r} are both named {lf.name!r}; an LF's "
                             "name is its vote column, so each must be unique: rename one")
        seen[lf.name] = lf.path
    return functions


def _plain(value: Any) -> Any:
    """A table cell as a row dict holds it: missing values (NaN, <NA>, NaT) become None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def row_dicts(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Each clean row as the dict an LF receives: the manifest's other fields (from `meta`) and the
    row's columns (`meta` itself left out; a column wins over a meta field of the same name)."""
    columns = [c for c in rows.columns if c != "meta"]
    metas = rows["meta"] if "meta" in rows.columns else [None] * len(rows)
    out = []
    for meta, values in zip(metas, rows[columns].itertuples(index=False, name=None)):
        fields = json.loads(meta) if isinstance(meta, str) and meta else {}
        out.append(fields | {column: _plain(value) for column, value in zip(columns, values)})
    return out


def apply_labelling_function(lf: LabellingFunction, rows: list[dict[str, Any]], task: Task) -> np.ndarray:
    """(N,) int64 votes of one LF: the class index of the name it returned, ABSTAIN for None.

    An LF that raises, or returns something that names no class of the task, is a bug in the LF:
    RuntimeError / ValueError naming the LF, the sample and the value, and what is accepted.
    """
    votes = np.full(len(rows), ABSTAIN, dtype=np.int64)
    for i, row in enumerate(rows):
        try:
            name = lf.fn(row)
        except Exception as err:
            raise RuntimeError(f"labelling function {lf.name!r} ({lf.path}) raised on sample {row.get('sample_id')!r}: "
                               f"{type(err).__name__}: {err}") from err
        if name is None:
            continue
        try:
            votes[i] = task.index_of(name)
        except UnknownClass as err:
            raise ValueError(f"labelling function {lf.name!r} ({lf.path}) returned {name!r} for sample "
                             f"{row.get('sample_id')!r}: {err}; return a class name, or None to abstain") from None
    return votes

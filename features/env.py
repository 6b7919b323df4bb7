"""Process environment the project sets before any library starts: telemetry off, offline hubs.

Called first thing at every entry point (CLI, tests, benchmarks). Values already set by
the user win, except that nothing here is ever switched *on*.
"""

from __future__ import annotations

import os
from pathlib import Path

TELEMETRY_OFF: dict[str, str] = {
    "DO_NOT_TRACK": "1",  # Evidently, MLflow
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "FEAST_USAGE": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


# Readable output by default (a user's own setting wins): library INFO chatter and weight-loading bars off.
QUIET_DEFAULTS: dict[str, str] = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",  # a fresh SQLite migrates slowly on 2 busy cores
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
}

# Server features flywheel never uses, off in every server a flywheel process starts (`flywheel ui`, a test's
# `mlflow server`) unless set outside. MLflow's job execution (a job runner and up to 10 huey consumers per
# `mlflow server` or `mlflow ui` with a database store) serves GenAI scorers, evaluation and prompt optimisation:
# idle, those consumers polled through 52 CPU-s of the test suite's 1,560 (session 22). The compose stack's
# server sets the same.
UNUSED_SERVICES_OFF: dict[str, str] = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}

# How the table libraries hold memory; read when pyarrow and pandas are imported, so set before either is.
MEMORY_DEFAULTS: dict[str, str] = {
    # Arrow's default jemalloc pool keeps freed buffers for reuse, so a clean of 20k rows ended
    # 44 MB higher than with the system allocator, which gives memory back (benchmarks/data_scaling.py).
    "ARROW_DEFAULT_MEMORY_POOL": "system",
    # pandas' Copy-on-Write (the default from pandas 3): a copy shares its data until one side is written.
    # GX copies the whole clean table for each per-row expectation (to drop the column's nulls; a column
    # without any is "filtered" by a full copy); with GX's fingerprint off too (features/validate.py),
    # validation's peak over its start at 100k rows fell from 18-19 MB to 9-13 under it. flywheel's results are
    # the same in either mode; a value set outside stays.
    "PANDAS_COPY_ON_WRITE": "1",
}


# MLflow's HTTP client retries each request on a refused connection or a 5xx (urllib3 Retry): waits
# of about 0, 2, 4, 8, 16 s (factor × 2^n, plus up to 1 s jitter), so a tracking server that restarts
# (10-12 s to answer again, 25 s on a busy 2-core machine) is waited for, and a request to one that is
# down fails in about half a minute instead of MLflow's default of about four minutes (7 retries,
# factor 2). Registry operations are retried again on top of that (features/transient.py).
MLFLOW_HTTP_RETRIES: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
}


def cache_dir() -> Path:
    """Where flywheel keeps what it can make again on this machine (an empty MLflow store, the class prompts'
    and the captions' embeddings): $FLYWHEEL_CACHE_DIR, else $XDG_CACHE_HOME/flywheel, else ~/.cache/flywheel.
    Everything in it is keyed by what it was made from: removing it costs a recomputation, never a result."""
    if os.environ.get("FLYWHEEL_CACHE_DIR"):
        return Path(os.environ["FLYWHEEL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flywheel"


TEXT_CACHE_MAX_ROWS = 200_000  # captions' embeddings kept per encoder version: about 420 MB at 2.1 KB a row


def text_cache_max_rows() -> int:
    """How many captions' embeddings the cache folder keeps per encoder version: $FLYWHEEL_TEXT_CACHE_MAX_ROWS, else
    TEXT_CACHE_MAX_ROWS. Past it, the rows kept longest go first. 0 keeps none (every caller encodes). A value that is
    not a whole number of 0 or more raises ValueError, which `flows.settings.load_settings` raises at start-up."""
    value = os.environ.get("FLYWHEEL_TEXT_CACHE_MAX_ROWS", "").strip()
    if not value:
        return TEXT_CACHE_MAX_ROWS
    try:
        rows = int(value)
    except ValueError:
        rows = -1
    if rows < 0:
        raise ValueError(f"FLYWHEEL_TEXT_CACHE_MAX_ROWS={value!r}: expected a whole number of rows (0 keeps no"
                         f" caption's embedding; unset: {TEXT_CACHE_MAX_ROWS:,})")
    return rows


def apply_process_environment() -> None:
    """Switch every library's telemetry off and keep model hubs offline for this process and its children;
    server features flywheel never uses off (UNUSED_SERVICES_OFF); Arrow's and pandas' memory modes
    (MEMORY_DEFAULTS: before either is imported); MLflow's per-request retries sized for a server blip."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    for key, value in {**QUIET_DEFAULTS, **UNUSED_SERVICES_OFF, **MEMORY_DEFAULTS, **MLFLOW_HTTP_RETRIES}.items():
        os.environ.setdefault(key, value)


def quiet_library_output() -> None:
    """Keep a CLI run readable: library deprecation noise and INFO chatter off, real warnings kept."""
    import logging
    import warnings

    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*LitestarDeprecation.*")
    for name in ("mlflow", "alembic", "feast", "great_expectations", "evidently", "dvc"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The pyfunc logger warns on every log_model that the model is cloudpickled and has no signature:
    # both are by design here (the model class lives in models/pyfunc.py and takes a DataFrame).
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)

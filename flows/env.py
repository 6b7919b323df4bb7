"""Process environment the project sets before any library starts: telemetry off, offline hubs.

Called first thing at every entry point (CLI, tests, benchmarks). Values already set by
the user win, except that nothing here is ever switched *on*.
"""

from __future__ import annotations

import os

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
    # Arrow's default jemalloc pool keeps freed buffers for reuse, so a clean of 20k rows ended
    # 44 MB higher than with the system allocator, which gives memory back (benchmarks/data_scaling.py).
    "ARROW_DEFAULT_MEMORY_POOL": "system",
}


def apply_process_environment() -> None:
    """Switch every library's telemetry off and keep model hubs offline for this process and its children."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    for key, value in QUIET_DEFAULTS.items():
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

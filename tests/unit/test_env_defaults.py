"""A flywheel process's environment defaults (features/env.py) as the libraries read them: the servers it
starts run without MLflow's job execution, and a value the user set stays."""

from __future__ import annotations

from features.env import apply_process_environment


def test_mlflow_servers_a_flywheel_process_starts_run_without_job_execution_unless_the_user_says(monkeypatch):
    from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION

    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    assert MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get() is True  # MLflow's own default: a runner and huey consumers
    apply_process_environment()
    assert MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get() is False  # what `mlflow server` / `mlflow ui` read at start

    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")  # a user who runs MLflow jobs
    apply_process_environment()
    assert MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get() is True

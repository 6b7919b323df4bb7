"""Orchestration: Prefect flows and tasks, the `flywheel` CLI and settings loading."""

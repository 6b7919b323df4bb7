"""The layout of FLYWHEEL_HOME: where every store of the embedded stack lives (flows.settings re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StatePaths:
    """The layout of FLYWHEEL_HOME; every store of the embedded stack lives under it."""

    home: Path

    @property
    def lake_raw(self) -> Path:
        return self.home / "lake" / "raw"

    @property
    def lake_clean(self) -> Path:
        return self.home / "lake" / "clean"

    @property
    def model_inputs(self) -> Path:
        return self.home / "lake" / "inputs"

    def batch_inputs(self, batch_id: str) -> Path:
        """A batch's model-input shards (folder of part-*.npz)."""
        return self.model_inputs / batch_id

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    @property
    def review(self) -> Path:
        return self.home / "review"

    @property
    def gx(self) -> Path:
        return self.home / "gx"

    @property
    def feast(self) -> Path:
        return self.home / "feast"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow" / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def evidently(self) -> Path:
        return self.home / "evidently"

    @property
    def prefect(self) -> Path:
        return self.home / "prefect"

    @property
    def inference(self) -> Path:
        """The inference log: API requests and batch scoring, JSON lines per day (read by monitoring)."""
        return self.home / "inference"

    @property
    def loop(self) -> Path:
        """State of the closed loop: alert deduplication and the retraining rate limit."""
        return self.home / "loop"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    @property
    def golden(self) -> Path:
        return self.home / "golden"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db.resolve()}"

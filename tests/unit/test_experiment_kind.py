"""MLflow 3's UI opens an experiment on its GenAI overview unless it is tagged as model development:
flywheel's experiments carry `mlflow.experimentKind: custom_model_development`, new or found untagged."""

from __future__ import annotations

from models.registry import EXPERIMENT, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT, Registry


def test_the_training_and_monitoring_experiments_open_on_the_training_view(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path}/mlflow.db", "kind-test", tmp_path / "artifacts")
    client = registry.client()
    untagged = client.create_experiment("flywheel-monitoring")  # as an older flywheel left it
    training = registry.experiment_id()
    assert registry.experiment_id() == training  # found again, not created twice
    assert registry.experiment_id("flywheel-monitoring") == untagged
    for experiment_id in (training, untagged):
        assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_DEVELOPMENT
    assert client.get_experiment(training).name == EXPERIMENT

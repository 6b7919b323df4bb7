"""The gate stage on the embedded registry: two gates at once (one promotes, the other gets
StaleChampion), the decision record on the version, the DVC-tracked golden set, and the
`flywheel promote / rollback / models` commands."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.model_stages import build_golden_set, stage_gate
from flows.settings import load_settings
from flows.stage_config import registry_for
from models.registry import CHAMPION, PREVIOUS, StaleChampion, promote, register_candidate
from tests.conftest import example_params
from tests.flows.model_support import log_untrained_imagebind

pytestmark = pytest.mark.slow  # three log_model calls and a 40-row golden set: ~30 s on 2 cores


@pytest.fixture(scope="module")
def settings(tmp_path_factory, small_golden_batch):
    home = tmp_path_factory.mktemp("home")
    raw = example_params()
    raw["task"]["golden"] = str(small_golden_batch)
    raw["gate"]["families"]["imagebind"] = {"thresholds": {"zero_shot_image_acc": {"min": 0.0, "max_drop": 1.0},
                                                           "p95_latency_ms": {"max": 1000.0}},
                                            "slices": {"voice_group": {"zero_shot_audio_acc": {"max_drop": 1.0}}}}
    raw["gate"]["min_slice_rows"] = 3
    params = home / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    settings = load_settings(home, params)
    registry = registry_for(settings)
    for seed in range(3):
        logged = log_untrained_imagebind(settings, registry, seed, f"gate-test-{seed}")
        register_candidate(registry, logged, {"data_version": f"lake/inputs@md5-{seed}", "flow_run": f"run-{seed}"})
    promote(registry, "1", expected_champion=None)
    build_golden_set(settings)  # once, before the race
    return settings


def test_two_gates_at_once_promote_exactly_one(settings):
    registry = registry_for(settings)
    barrier, outcomes = threading.Barrier(2), {}

    def gate(version: str) -> None:
        barrier.wait()
        try:
            outcomes[version] = stage_gate(settings, version, f"race-{version}")
        except StaleChampion as err:
            outcomes[version] = err

    threads = [threading.Thread(target=gate, args=(v,)) for v in ("2", "3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [v for v, o in outcomes.items() if not isinstance(o, StaleChampion)]
    assert len(winners) == 1, outcomes
    [loser] = [v for v in outcomes if v not in winners]
    assert "re-run the gate" in str(outcomes[loser])
    assert registry.alias_version(CHAMPION) == winners[0] and registry.alias_version(PREVIOUS) == "1"
    decision = outcomes[winners[0]]
    assert decision.passed and decision.lineage["champion_version"] == "1"
    # golden/<batch folder>-<content digest>-<input spec>@<md5>: the set names its rows exactly
    assert decision.lineage["golden_version"].startswith("golden/golden-") and "@" in decision.lineage["golden_version"]
    assert decision.lineage["data_version"] == f"lake/inputs@md5-{int(winners[0]) - 1}"
    for version in ("2", "3"):  # both decisions are recorded, the loser's with why it was not promoted
        tags = registry.version_tags(version)
        assert tags["gate.passed"] == "true" and tags["gate.champion_version"] == "1"
        assert tags["lineage.golden_version"] == decision.lineage["golden_version"]
    assert registry.version_tags(loser)["gate.promotion"].startswith("stale: @champion is version")
    client = registry.client()
    run_id = client.get_model_version(registry.model_name, winners[0]).run_id
    artifact = client.download_artifacts(run_id, registry.version_tags(winners[0])["gate.artifact"])
    record = json.loads(Path(artifact).read_text())
    assert {c["kind"] for c in record["checks"]} >= {"min", "change", "max"}
    assert any(c["slice"] and c["slice"].startswith("voice_group=") and c["interval"] for c in record["checks"])


def test_golden_set_is_dvc_tracked_in_the_lake(settings):
    from features.lake_versioning import open_lake

    _, version = build_golden_set(settings)
    path, md5 = version.split("@")
    tracked = open_lake(settings.paths.home).version_of(path)
    assert tracked is not None and tracked.md5 == md5 and md5.endswith(".dir")


def test_promote_rollback_and_models_commands(settings):
    runner = CliRunner()
    opts = ["--home", str(settings.paths.home), "--params", str(settings.paths.home / "params.yaml")]
    registry = registry_for(settings)
    champion = registry.alias_version(CHAMPION)
    other = "3" if champion == "2" else "2"
    refused = runner.invoke(app, ["promote", other, "--force", *opts])
    assert refused.exit_code == 2 and "--force needs --reason" in refused.output
    forced = runner.invoke(app, ["promote", other, "--force", "--reason", "hotfix", *opts])
    assert forced.exit_code == 0, forced.output
    assert registry.alias_version(CHAMPION) == other and registry.alias_version(PREVIOUS) == champion
    assert registry.version_tags(other)["promotion.reason"] == "hotfix"
    back = runner.invoke(app, ["rollback", "--reason", "bad outputs", *opts])
    assert back.exit_code == 0 and registry.alias_version(CHAMPION) == champion, back.output
    assert registry.alias_version(PREVIOUS) is None
    gated = runner.invoke(app, ["promote", other, *opts])  # gate against the restored champion, then promote
    assert gated.exit_code == 0, gated.output
    assert "PASSED" in gated.output and registry.alias_version(CHAMPION) == other
    listed = runner.invoke(app, ["models", *opts], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    assert "@champion" in listed.output and "@previous" in listed.output and "passed" in listed.output

"""Promotion is compare-and-set: two promotions racing against the same champion leave exactly one
winner, the other gets StaleChampion, and @champion/@previous stay consistent; rollback and overrides
are recorded on the versions."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from models.registry import CHAMPION, PREVIOUS, Actor, Registry, StaleChampion, list_versions, promote, rollback
from models.registry_lock import advisory_key, lock_file_for

NAME = "cas-test"


def make_registry(home: Path, versions: int) -> Registry:
    """A registry with `versions` bare versions (no logged model: aliases are all this test moves)."""
    registry = Registry(f"sqlite:///{home / 'mlflow.db'}", NAME, home / "artifacts")
    client = registry.client()
    client.create_registered_model(NAME)
    source = (home / "artifacts").absolute().as_uri()
    for _ in range(versions):
        client.create_model_version(NAME, source)
    return registry


def promote_in_process(tracking_uri: str, version: str, barrier, results) -> None:
    registry = Registry(tracking_uri, NAME)
    barrier.wait()
    try:
        promote(registry, version, expected_champion="1")
        results.put((version, "won"))
    except StaleChampion as err:
        results.put((version, f"stale: {err}"))


def assert_one_winner(registry: Registry, outcomes: dict[str, str]) -> None:
    winners = [v for v, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    [loser] = [v for v in outcomes if v not in winners]
    assert outcomes[loser].startswith(f"stale: @champion is version {winners[0]}, but the decision for version {loser}")
    assert "re-run the gate" in outcomes[loser]
    assert registry.alias_version(CHAMPION) == winners[0]
    assert registry.alias_version(PREVIOUS) == "1"  # the replaced one, not the loser


def test_two_processes_promoting_against_the_same_champion_one_wins(tmp_path):
    registry = make_registry(tmp_path, 3)
    promote(registry, "1", expected_champion=None)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=promote_in_process, args=(registry.tracking_uri, v, barrier, results))
               for v in ("2", "3")]
    for worker in workers:
        worker.start()
    outcomes = dict(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    assert_one_winner(registry, outcomes)


def test_racing_threads_never_both_win(tmp_path):
    registry = make_registry(tmp_path, 1)
    client = registry.client()
    for round_ in range(4):
        source = (tmp_path / "artifacts").absolute().as_uri()
        a, b = (str(client.create_model_version(NAME, source).version) for _ in range(2))
        base = str(int(a) - 1)
        client.set_registered_model_alias(NAME, CHAMPION, base)
        client.delete_registered_model_alias(NAME, PREVIOUS) if registry.alias_version(PREVIOUS) else None
        barrier, outcomes = threading.Barrier(2), {}

        def race(version: str) -> None:
            barrier.wait()
            try:
                promote(registry, version, expected_champion=base)
                outcomes[version] = "won"
            except StaleChampion as err:
                outcomes[version] = f"stale: {err}"

        threads = [threading.Thread(target=race, args=(v,)) for v in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes.values()).count("won") == 1, (round_, outcomes)
        assert registry.alias_version(PREVIOUS) == base and registry.alias_version(CHAMPION) in (a, b)


def test_promotion_moves_champion_to_previous_and_rollback_restores_it(tmp_path):
    registry = make_registry(tmp_path, 2)
    assert promote(registry, "1", expected_champion=None) is None
    assert promote(registry, "2", expected_champion="1", actor=Actor(by="ana", reason="manual", at="t0"), forced=True) == "1"
    assert (registry.alias_version(CHAMPION), registry.alias_version(PREVIOUS)) == ("2", "1")
    tags = registry.version_tags("2")
    assert (tags["promotion.by"], tags["promotion.reason"], tags["promotion.forced"]) == ("ana", "manual", "true")
    with pytest.raises(ValueError, match="already @champion"):
        promote(registry, "2", expected_champion="2")
    with pytest.raises(StaleChampion, match="@champion is version 2, not 1"):
        rollback(registry, expected_champion="1")
    assert rollback(registry, actor=Actor(by="bo", reason="bad outputs")) == ("2", "1")
    assert (registry.alias_version(CHAMPION), registry.alias_version(PREVIOUS)) == ("1", None)
    assert registry.version_tags("2")["rollback.rolled_back.reason"] == "bad outputs"
    assert registry.version_tags("1")["rollback.restored.from"] == "2"
    with pytest.raises(ValueError, match="nothing to roll back to"):
        rollback(registry)
    listed = {v.version: v for v in list_versions(registry)}
    assert listed["1"].aliases == ("champion",) and listed["2"].gate == "forced"


def test_unknown_version_and_unlockable_uri_are_refused_by_name(tmp_path):
    registry = make_registry(tmp_path, 1)
    with pytest.raises(ValueError, match="no version '7'"):
        promote(registry, "7", expected_champion=None)
    with pytest.raises(ValueError, match="FLYWHEEL_REGISTRY_LOCK_URI"):
        lock_file_for("http://mlflow:5000", NAME)
    assert lock_file_for("sqlite:////x/mlflow.db", NAME) == Path("/x/mlflow.db.cas-test.champion.lock")
    assert lock_file_for("postgresql://u@db/mlflow", NAME) is None
    assert advisory_key(NAME) == advisory_key(NAME) != advisory_key("other")

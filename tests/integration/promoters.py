"""Two promoters racing for @champion in separate processes: what the registry-lock tests share.

Each promoter is spawned (it inherits the environment that chooses the lock, as `flywheel promote` would),
says it is ready, then tries to promote its version over champion v1; exactly one may win."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from flows.settings import load_settings
from flows.stage_config import registry_for
from models.registry import CHAMPION, PREVIOUS, StaleChampion, promote


def promote_in_process(home: str, params: str, version: str, ready, results) -> None:
    registry = registry_for(load_settings(Path(home), Path(params)))
    ready.put(version)
    try:
        promote(registry, version, expected_champion="1")
        results.put((version, "won"))
    except StaleChampion as err:
        results.put((version, f"stale: {err}"))


def start_promoters(homes: list[Path], params: Path):
    """One spawned promoter per home, of versions 2 and 3; returns (workers, ready, results) queues."""
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    workers = [context.Process(target=promote_in_process, args=(str(home), str(params), version, ready, results))
               for home, version in zip(homes, ("2", "3"))]
    for worker in workers:
        worker.start()
    return workers, ready, results


def assert_one_won(workers, results, registry) -> tuple[str, str]:
    """Exactly one promoter won, the other was told the champion had moved; returns (winner, loser)."""
    outcomes = dict(results.get(timeout=240) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    winners = [v for v, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    [loser] = [v for v in outcomes if v not in winners]
    assert outcomes[loser].startswith(f"stale: @champion is version {winners[0]}, but the decision for version {loser}")
    assert (registry.alias_version(CHAMPION), registry.alias_version(PREVIOUS)) == (winners[0], "1")
    return winners[0], loser

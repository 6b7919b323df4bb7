"""`flywheel promote`, `flywheel rollback`, `flywheel models`: the registry by hand.

Registered on the main app in flows/cli.py. Every alias move goes through the same
compare-and-set as the pipeline's gate (models.registry.promote / rollback). The gate names a class
slice by the task's class name (`class=triangle`), and so do these tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.markup import escape

from flows.cli_common import HOME_OPTION, PARAMS_OPTION, cli_settings, console
from flows.cli_tables import Col, FittedTable

if TYPE_CHECKING:
    from models.registry import VersionSummary

KEY_METRICS = ("zero_shot_image_acc", "zero_shot_audio_acc", "audio_to_image_r1", "p95_latency_ms", "model_size_mb")
CLASS_SLICE = "class"  # models.evaluate.CLASS_GROUP, not imported: that module loads torch
CHECK_TAG = "gate.check."  # models.registry.record_decision: gate.check.<metric>[.<slice>].<kind>, headline and failed slice checks


def promote(
    version: str = typer.Argument(..., help="model version to make @champion"),
    force: bool = typer.Option(False, "--force", help="skip the gate: a manual override, recorded with --reason"),
    reason: str = typer.Option("", "--reason", help="why (required with --force); written on the version"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Gate VERSION against the current @champion and promote it if it passes (or --force it)."""
    from flows.model_stages import stage_gate
    from flows.stage_config import registry_for
    from models.registry import CHAMPION, Actor, InconsistentAliases, StaleChampion
    from models.registry import promote as move_champion
    from models.registry_lock import LockUnavailable

    settings = cli_settings(home, params)
    registry = registry_for(settings)
    if force and not reason.strip():
        console.print("[red]--force needs --reason[/red]: a manual override is recorded with who, when and why")
        raise typer.Exit(2)
    try:
        if force:
            champion = registry.alias_version(CHAMPION)
            move_champion(registry, version, expected_champion=champion, actor=Actor(reason=reason), forced=True)
            console.print(f"[yellow]forced[/yellow]: v{version} is @champion (was v{champion}); override recorded")
            return
        decision = stage_gate(settings, version)
    except (StaleChampion, InconsistentAliases, LockUnavailable) as err:
        console.print(f"[red]not promoted:[/red] {err}")
        raise typer.Exit(1) from err
    except ValueError as err:
        console.print(f"[red]cannot promote:[/red] {err}")
        raise typer.Exit(2) from err
    console.print(gate_table(decision.to_dict()))
    if not decision.passed:
        console.print(f"[red]REJECTED[/red]: {decision.reason}\n(override with --force --reason '…')")
        raise typer.Exit(1)
    console.print(f"[green]PASSED[/green]: v{version} is @champion (was v{decision.lineage.get('champion_version')})")


def rollback(
    reason: str = typer.Option("", "--reason", help="why; written on both versions"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """@champion ← @previous; the rolled-back version is tagged and @previous cleared."""
    from flows.stage_config import registry_for
    from models.registry import Actor, StaleChampion
    from models.registry import rollback as roll_back
    from models.registry_lock import LockUnavailable

    registry = registry_for(cli_settings(home, params))
    try:
        rolled_back, restored = roll_back(registry, actor=Actor(reason=reason))
    except (StaleChampion, ValueError) as err:
        console.print(f"[red]cannot roll back:[/red] {err}")
        raise typer.Exit(2) from err
    except LockUnavailable as err:  # another promotion holds the champion lock: try again later
        console.print(f"[red]not rolled back:[/red] {err}")
        raise typer.Exit(1) from err
    console.print(f"rolled back: v{restored} is @champion again (v{rolled_back} retired; @previous cleared)")


def models(home: Optional[Path] = HOME_OPTION, params: Optional[Path] = PARAMS_OPTION) -> None:
    """Versions of the registered model: aliases, gate decision, key metrics, data version."""
    from flows.stage_config import registry_for
    from models.registry import list_versions

    settings = cli_settings(home, params)
    versions = list_versions(registry_for(settings))
    if not versions:
        console.print(f"no versions of {settings.params.registry.model_name} yet (`flywheel run` trains one)")
        return
    console.print(versions_table(versions, settings.params.registry.model_name, settings.task.slices))


# What `flywheel models` drops first in a narrow terminal: the lowest `keep` (cli_tables.FittedTable).
VERSION_COLUMNS = (
    Col("version", keep=100), Col("aliases", fold=True, keep=90), Col("gate", keep=95), Col("vs", keep=40),
    *(Col(m.removeprefix("zero_shot_"), keep=keep) for m, keep in zip(KEY_METRICS, (80, 75, 70, 50, 45))),
    Col("slices", fold=True, keep=85), Col("data version", fold=True, keep=30),
    Col("created (UTC)", fold=True, keep=20),
)


def versions_table(versions: Sequence[VersionSummary], model_name: str, slice_fields: Sequence[str]) -> FittedTable:
    """One row per version, newest first: aliases, gate decision, the champion it was gated against, key metrics,
    slice checks, data version and creation time."""
    table = FittedTable(VERSION_COLUMNS, title=model_name)
    for v in versions:
        gate_style = {"passed": "green", "rejected": "red", "forced": "yellow"}.get(v.gate, "dim")
        table.add_row(v.version, ", ".join(f"@{a}" for a in v.aliases), f"[{gate_style}]{v.gate}[/{gate_style}]",
                      v.tags.get("gate.champion_version", "") if v.tags.get("gate.champion_version") != "None" else "-",
                      *(v.tags.get(f"gate.metric.{m}", "") for m in KEY_METRICS),
                      escape(slices_cell(v.tags, slice_fields)),
                      escape(v.tags.get("data_version", "")), v.created_at[:16].replace("T", " "))
    return table


def failed_slices(tags: Mapping[str, str], fields: Sequence[str]) -> list[str]:
    """The slices a version's gate decision failed, named (`class=circle`, `camera=b`), from the
    `gate.check.*` tags; in the registry a slice's `=` reads `_` (`class_2`), so the group is found by
    the task's slice fields (longest first, so `class_size` is not the class slice) and then the class."""
    found: list[str] = []
    for key, value in tags.items():
        if not key.startswith(CHECK_TAG) or not value.startswith("FAIL"):
            continue
        parts = key.removeprefix(CHECK_TAG).split(".")
        if len(parts) < 3:
            continue  # a headline check: <metric>.<kind>
        slice_ = ".".join(parts[1:-1])
        group = next((g for g in sorted(fields, key=len, reverse=True) if slice_.startswith(f"{g}_")), None)
        if group is None and slice_.startswith(f"{CLASS_SLICE}_"):
            group = CLASS_SLICE
        named = f"{group}={slice_[len(group) + 1:]}" if group else slice_
        if named not in found:
            found.append(named)
    return found


def slices_cell(tags: Mapping[str, str], fields: Sequence[str]) -> str:
    """`4/4 passed` (slice checks), and the slices that failed, by name."""
    summary = tags.get("gate.slices", "")
    passed = f"{summary.split(' ', 1)[0]} passed" if summary else ""
    failed = failed_slices(tags, fields)
    return f"{passed}; failed: {', '.join(failed)}" if failed else passed


GATE_COLUMNS = (Col("check", fold=True, keep=100), Col("observed", keep=80), Col("bound", keep=70),
                Col("interval", keep=60), Col("result", keep=90))


def gate_table(decision: dict) -> FittedTable:
    """One row per check: observed value (or improvement), bound, bootstrap interval, result; a class slice
    reads `class=<name>`, as the gate recorded it."""
    lineage = decision.get("lineage", {})
    champion = f"v{lineage['champion_version']}" if lineage.get("champion_version") else "no champion"
    table = FittedTable(GATE_COLUMNS, title=f"gate: v{lineage.get('challenger_version')} vs {champion} "
                                            f"on {lineage.get('golden_version')}")
    for c in decision["checks"]:
        name = (f"{c['metric']}[{c['slice']}] {c['kind']}" if c.get("slice")
                else f"{c['metric']} {c['kind']}")
        name = escape(name)  # `[class=circle]` is text, not a rich style tag
        interval = f"{c['interval'][0]:+.4f} … {c['interval'][1]:+.4f}" if c.get("interval") else ""
        table.add_row(name, f"{c['observed']:.4f}", f"{c['bound']:.4f}", interval,
                      "pass" if c["passed"] else "[red]FAIL[/red]")
    return table

"""`flywheel lineage VERSION|RUN_ID`: the whole chain of a model version or run, each step a link where the
terminal shows hyperlinks (OSC 8, which rich writes for `[link=…]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.cli_common import HOME_OPTION, PARAMS_OPTION, cli_settings, console, exit_on_user_error


def step_cell(step) -> str:
    """What the step is, a hyperlink to its page; its detail; and the address spelt out, so a terminal without
    hyperlinks (or a copy into a ticket) still shows where to go. Long values fold, never get cut."""
    value = f"[link={step.url}]{escape(step.value)}[/link]" if step.url else escape(step.value)
    lines = [value] + ([f"[dim]{escape(step.detail)}[/dim]"] if step.detail else [])
    lines += [f"[blue]{escape(step.url)}[/blue]"] if step.url else []
    return "\n".join(lines)


def lineage_table(lineage) -> Table:
    """One row per step, in the chain's order; a step with several entries (data versions, drift checks)
    names its kind once."""
    table = Table(title=f"lineage of run {lineage.run_id}", title_justify="left")
    table.add_column("step", no_wrap=True)
    table.add_column("what, and where to open it", overflow="fold")
    steps = lineage.steps
    for i, step in enumerate(steps):
        last_of_kind = i + 1 == len(steps) or steps[i + 1].kind != step.kind
        table.add_row("" if i and steps[i - 1].kind == step.kind else step.kind, step_cell(step), end_section=last_of_kind)
    return table


def print_lineage(lineage, out: Console) -> None:
    out.print(lineage_table(lineage), soft_wrap=False)


def lineage(
    key: str = typer.Argument(..., metavar="VERSION|RUN_ID", help="a model version (3 or v3) or a run id"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """The chain behind a model version or run: DVC versions → GX result → Feast feature service → MLflow run →
    model version → gate decision → Prefect flow run → drift checks since, each a link to its page."""
    from flows.lineage import LineageNotFound, read_lineage

    settings = cli_settings(home, params)
    with exit_on_user_error("no lineage", LineageNotFound):
        found = read_lineage(settings, key)
    print_lineage(found, console)

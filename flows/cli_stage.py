"""`flywheel stage NAME`: one stage of the table on one landing batch (what each DVC stage runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli_common import HOME_OPTION, PARAMS_OPTION, cli_settings, console


def stage(
    name: str = typer.Argument(..., help="the stage: ingest, clean, validate, transform, label, version, train, register, "
                                          "gate, monitor, react, or a project's own (params.yaml stages.extra)"),
    source: str = typer.Option("data/landing/batch-001", "--source",
                               help="landing batch: a folder (manifest.jsonl + files) or an fsspec URI"),
    debug: bool = typer.Option(False, "--debug", help="print the full traceback when a stage fails"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Run one stage on one landing batch, without Prefect: the stages before it are re-loaded from their
    records (computed only where none exists yet), then NAME is computed unless its own record exists.
    `dvc repro` runs each lifecycle stage this way (dvc.yaml)."""
    from flows.cli import landing_source, run_and_report
    from flows.pipeline import new_run_id, run_one_stage
    from flows.stages import stage_named, stage_table

    settings = cli_settings(home, params)
    try:
        stage_named(stage_table(settings), name)
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from err
    batch = landing_source(source)
    run_id = new_run_id()

    def one_stage() -> None:
        from flows.loop import reaction
        from flows.prefect_runtime import preload_libraries

        preload_libraries(with_prefect=False)
        run_one_stage(settings, name, batch, run_id=run_id, react=reaction(signal=None))  # react: as `run --plain`

    run_and_report(settings, run_id, f"stage {name} on {source} …", one_stage, debug)

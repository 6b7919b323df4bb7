"""`flywheel stage NAME`: one stage of the table on one landing batch (what each DVC stage runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli_common import HOME_OPTION, PARAMS_OPTION, cli_settings, console

LANDING_DIR = "data/landing"  # where `--batch NAME` finds the landing batch NAME


def stage(
    name: str = typer.Argument(..., help="the stage: ingest, clean, validate, transform, label, version, train, register, "
                                          "gate, monitor, react, or a project's own (params.yaml stages.extra)"),
    batch: Optional[str] = typer.Option(None, "--batch", help=f"landing batch NAME under {LANDING_DIR}/ (or give --source)"),
    source: Optional[str] = typer.Option(None, "--source",
                                         help="landing batch: a folder (manifest.jsonl + files) or an fsspec URI "
                                              f"(default: {LANDING_DIR}/batch-001)"),
    outputs: Optional[Path] = typer.Option(None, "--outputs", metavar="DIR",
                                           help="write the stage's DVC files there (dvc.yaml passes dvc-stages/<batch>): "
                                                "its key, metrics and plots"),
    debug: bool = typer.Option(False, "--debug", help="print the full traceback when a stage fails"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Run one stage on one landing batch, without Prefect: the stages before it are re-loaded from their
    records (computed only where none exists yet), then NAME is computed unless its own record exists.
    `dvc repro` runs each lifecycle stage this way (dvc.yaml, written by `flywheel dvc-yaml`)."""
    from flows.cli_report import landing_source, run_and_report
    from flows.dvc_outputs import pinned_versions, stage_call, write_stage_outputs
    from flows.pipeline import new_run_id, run_one_stage
    from flows.stages import stage_named, stage_table

    if batch is not None and source is not None:
        console.print(f"[red]--batch {batch} and --source {source} name the batch twice:[/red] give one of them")
        raise typer.Exit(2)
    source = source or f"{LANDING_DIR}/{batch or 'batch-001'}"
    settings = cli_settings(home, params)
    table = stage_table(settings)
    try:
        spec = stage_named(table, name)
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from err
    landing = landing_source(source)
    run_id = new_run_id()

    def one_stage() -> None:
        from flows.loop import reaction

        versions = pinned_versions(table, name, outputs) if outputs is not None else None
        record = run_one_stage(settings, name, landing, call=stage_call(versions), run_id=run_id,
                               react=reaction(signal=None))  # react: as `run --plain`
        if outputs is not None:
            write_stage_outputs(settings, spec, record, Path(str(landing)).name, outputs)

    run_and_report(settings, run_id, f"stage {name} on {source} …", one_stage, debug)

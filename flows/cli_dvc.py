"""`flywheel dvc-yaml`: write the project's dvc.yaml from the stage table and its landing batches."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from flows.cli_common import PARAMS_OPTION, cli_settings, console


def dvc_yaml(
    batches: Optional[list[str]] = typer.Option(None, "--batch",
                                                help="a landing batch under data/landing/, repeated in the order they "
                                                     "run (default: the batches dvc.yaml's other stages write, else "
                                                     "the folders there)"),
    out: Path = typer.Option(Path("dvc.yaml"), "--out", help="the dvc.yaml to write; its folder is the project"),
    check: bool = typer.Option(False, "--check", help="write nothing; exit 1 when the file differs from what "
                                                        "would be written"),
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """One DVC stage per lifecycle stage per landing batch, each running `flywheel stage NAME --batch BATCH`,
    with its code, params, upstream out, metrics and plots; the file's other stages are kept."""
    import yaml

    from flows.dvc_pipeline import dvc_yaml_text
    from flows.settings import EnvSettings
    from flows.stages import stage_table

    settings = cli_settings(None, params)
    existing = yaml.safe_load(out.read_text()) if out.is_file() else {}
    try:
        text = dvc_yaml_text(settings, stage_table(settings), out.absolute().parent, params or EnvSettings().params,
                             batches, existing)
    except ValueError as err:
        console.print(f"[red]cannot write {out}:[/red] {err}")
        raise typer.Exit(2) from err
    if check:
        same = out.is_file() and out.read_text() == text
        console.print(f"{out} is {'up to date' if same else 'out of date: run `flywheel dvc-yaml`'}")
        raise typer.Exit(0 if same else 1)
    out.write_text(text)
    stages = yaml.safe_load(text)["stages"]
    console.print(f"wrote {out}: {len(stages)} stages ({', '.join(list(stages)[:3])}, …)")

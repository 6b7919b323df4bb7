"""`flywheel`: the command line. Settings are read here, once, and passed down."""

from __future__ import annotations

from features.env import apply_process_environment, quiet_library_output

apply_process_environment()
quiet_library_output()  # before any library import below can start telemetry

import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

import typer  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn  # noqa: E402

from flows.cli_admin import quarantine_app, review_app, server_app, show_params  # noqa: E402
from flows.cli_dvc import dvc_yaml  # noqa: E402
from flows.cli_common import (  # noqa: E402
    HOME_OPTION,
    PARAMS_OPTION,
    cli_settings,
    console,
    exit_on_user_error,
    require_dask_cluster,
    require_registry_lock,
)
from flows.cli_lineage import lineage  # noqa: E402
from flows.cli_loop import retrain, schedule  # noqa: E402
from flows.cli_models import models, promote, rollback  # noqa: E402
from flows.cli_monitor import monitor  # noqa: E402
from flows.cli_report import landing_source, print_summary, run_and_report, ui_commands  # noqa: E402
from flows.cli_stage import stage as stage_command  # noqa: E402

app = typer.Typer(help="flywheel: the ML lifecycle from landing data to a gated, monitored model.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(review_app, name="review")
app.add_typer(server_app, name="server")
app.command("promote")(promote)
app.command("stage")(stage_command)
app.command("dvc-yaml")(dvc_yaml)
app.command("rollback")(rollback)
app.command("models")(models)
app.command("lineage")(lineage)
app.command("schedule")(schedule)
app.command("retrain")(retrain)
app.command("monitor")(monitor)
app.command("params")(show_params)


GENERATOR_FORM = "module.path:function"  # how params.yaml names demo.generator


def import_generator(path: str | None, params_path: Path):
    """params.yaml's demo.generator → the function it names; ValueError naming the path when it cannot be used."""
    import importlib

    if path is None:
        raise ValueError(f"{params_path}: this project declares no demo generator (demo.generator is null); set it "
                         f"to a function as {GENERATOR_FORM!r}, e.g. 'mypkg.data:make_batch', or "
                         "write landing batches yourself (a folder with manifest.jsonl)")
    module_name, _, attribute = path.partition(":")
    if not module_name.strip() or not attribute.strip().isidentifier():
        raise ValueError(f"demo.generator: {path!r} is not an import path; write {GENERATOR_FORM!r}")
    try:
        module = importlib.import_module(module_name.strip())
    except ImportError as err:
        raise ValueError(f"demo.generator: cannot import module {module_name!r} ({type(err).__name__}: {err}); is the "
                         "package installed, or its folder on the Python path?") from err
    generator = getattr(module, attribute.strip(), None)
    if not callable(generator):
        raise ValueError(f"demo.generator: module {module_name!r} has no function {attribute!r}")
    return generator


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(..., "--out", help="folder to write the landing batch into (must not hold one yet)"),
    samples: Optional[int] = typer.Option(None, "--samples",
                                          help="rows (default: demo.samples, with --golden demo.golden_samples)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="same seed, same bytes (default: 0, with --golden demo.golden_seed)"),
    drift: Optional[str] = typer.Option(None, "--drift", help="a drift kind the project's generator knows"),
    golden: bool = typer.Option(False, "--golden", help="write the golden batch: every row labelled, no faults"),
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Generate a landing batch with the project's own generator (params.yaml demo.generator).

    Reads only params.yaml, not the task's golden batch, so `--golden` can write that batch before it exists.
    """
    from flows.settings import EnvSettings, load_params

    params_path = params or EnvSettings().params
    with exit_on_user_error("configuration error", FileNotFoundError, ValueError):
        demo = load_params(params_path).demo
        generator = import_generator(demo.generator, params_path)
    if golden and drift is not None:
        console.print("[red]--golden and --drift exclude each other:[/red] the golden batch is the gate's fixed test set")
        raise typer.Exit(2)
    total = samples or (demo.golden_samples if golden else demo.samples)
    start = seed if seed is not None else (demo.golden_seed if golden else 0)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        job = bar.add_task("generating the golden batch" if golden else "generating samples", total=total)
        try:
            batch = generator(out, samples=total, seed=start, drift=drift, golden=golden,
                              progress=lambda done, _: bar.update(job, completed=done), **demo.options)
        except (FileExistsError, ValueError, TypeError) as err:  # TypeError: demo.options the generator does not take
            console.print(f"[red]{demo.generator}:[/red] {err}")
            raise typer.Exit(2) from err
    console.print(describe_batch(batch, out))


def describe_batch(batch, out: Path) -> str:
    """One line on what a generator wrote: its rows, labelled rows and faults when the object it returns has them."""
    rows, labelled, faults = (getattr(batch, name, None) for name in ("rows", "labelled", "faults"))
    if rows is None:
        return f"wrote a landing batch to {out}"
    broken = ", ".join(f"{k}: {len(v)}" for k, v in (faults or {}).items() if v) or "none"
    return f"wrote {rows} rows to {out} ({labelled} labelled; faults: {broken})"


@app.command()
def init(
    folder: Path = typer.Argument(..., help="the new project's folder (created; must be empty)"),
    force: bool = typer.Option(False, "--force", help="write into a non-empty folder, replacing params.yaml and README.md"),
) -> None:
    """Start a project of your own: params.yaml with a task section to fill in, data/landing/ and a README."""
    from flows.scaffold import FolderNotEmpty, write_scaffold

    with exit_on_user_error("cannot init", FolderNotEmpty):
        made = write_scaffold(folder, force=force)
    console.print(f"wrote {made.params}, {made.readme} and {made.landing}/\n"
                  f"next: fill in the task: section of {made.params}, put the golden batch and landing batches under "
                  f"{made.landing.parent}/, then\n"
                  f"  flywheel run --params {made.params} --home {folder / '.flywheel'} --source {made.landing / 'batch-001'}",
                  soft_wrap=True)


def resumable_source(settings, run_id: str, command: str) -> str:
    """The landing source of a failed or killed run of `command`, or exit 2 saying why it cannot resume."""
    from flows.pipeline import NotResumable, load_resumable

    try:
        return load_resumable(settings, run_id, command)["source"]
    except NotResumable as err:
        console.print(f"[red]cannot resume:[/red] {err}")
        raise typer.Exit(2) from err


@app.command()
def run(
    source: str = typer.Option("data/landing/batch-001", "--source",
                               help="landing batch: a folder (manifest.jsonl + files) or an fsspec URI such as s3://bucket/batch"),
    plain: bool = typer.Option(False, "--plain", help="call the stage functions directly, without Prefect"),
    server: bool = typer.Option(True, "--server/--ephemeral",
                                help="reuse (or start once) a local Prefect server, or use a per-run ephemeral API"),
    debug: bool = typer.Option(False, "--debug", help="print the full traceback when a stage fails"),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN_ID",
                                         help="continue a failed or killed run from its first incomplete stage"),
    no_cache: bool = typer.Option(False, "--no-cache", help="compute every stage again, even those recorded as done"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Run the whole lifecycle on one landing batch and print the run summary.

    Stages already done on the same inputs (batch content, stage code, their params.yaml entries)
    are reused, not recomputed, so a re-run of a killed run continues where it stopped.
    Without PREFECT_API_URL the first run starts a local Prefect server in the background and
    later runs reuse it (its UI shows every run; `flywheel server stop` stops it).
    """
    settings = cli_settings(home, params)
    from flows.pipeline import new_run_id, run_stages

    if resume is not None:
        source = resumable_source(settings, resume, "run")
    require_registry_lock(settings)
    require_dask_cluster(settings, plain)
    batch = landing_source(source)
    run_id = resume or new_run_id()

    def lifecycle() -> None:
        if plain:  # each stage imports its own libraries: a run of cached stages needs none of them
            from flows.loop import reaction

            run_stages(settings, batch, run_id=run_id, react=reaction(signal=None), reuse=not no_cache)  # no events: retrains itself
        else:
            from flows.prefect_runtime import run_lifecycle

            run_lifecycle(settings, batch, run_id, server=server, reuse=not no_cache)

    run_and_report(settings, run_id, f"running the lifecycle on {source} …", lifecycle, debug)


@app.command()
def ingest(
    source: Optional[str] = typer.Option(None, "--source",
                                         help="landing batch: a folder (manifest.jsonl + files) or an fsspec URI such as s3://bucket/batch"),
    plain: bool = typer.Option(False, "--plain", help="call the stage functions directly, without Prefect"),
    debug: bool = typer.Option(False, "--debug", help="print the full traceback when a stage fails"),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN_ID",
                                         help="continue a failed or killed `flywheel ingest` run"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """The data stages on one landing batch (ingest → clean → validate → transform → label), then its drift
    check against the champion's window and the alerts; no training (the flywheel-ingest deployment's run).

    A batch a data stage rejects is monitored and alerted all the same, then the command exits 1. Drift
    emits the drift event where the flywheel-retrain deployment listens; this command never trains itself.
    """
    settings = cli_settings(home, params)
    from flows.pipeline import new_run_id

    if resume is not None:
        source = resumable_source(settings, resume, "ingest")
    elif source is None:
        console.print("[red]missing option:[/red] --source DIR (or --resume RUN_ID)")
        raise typer.Exit(2)
    require_dask_cluster(settings, plain)
    batch = landing_source(source)
    run_id = resume or new_run_id()

    def data_stages() -> None:
        if plain:
            from flows.loop import reaction
            from flows.pipeline import run_ingest_stages

            run_ingest_stages(settings, batch, run_id=run_id, react=reaction(signal=None, train_on_drift=False))
            return
        from flows.prefect_runtime import preload_libraries, prepare_prefect, run_tags

        start = prepare_prefect(settings, server=True)
        if start.booting:
            preload_libraries()
        start.wait()
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from flows.loop_flows import ingest_flow

        # as `flywheel run`: no 1 s wait at the end; tagged with the home and the run on the shared server
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), run_tags(settings, run_id):
            ingest_flow(str(batch), str(settings.paths.home), str(params.absolute()) if params else None, run_id=run_id,
                        train_on_drift=False)

    run_and_report(settings, run_id, f"ingesting {source} …", data_stages, debug)


@app.command("serve-model")
def serve_model(
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8080, "--port", help="TCP port"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Serve @champion over HTTP (OpenAPI at /docs): embed, classify, search; follows promotions and rollbacks."""
    settings = cli_settings(home, params)
    from flows.serving import serve_model as run_server

    console.print(f"serving @champion of {settings.params.registry.model_name} on http://{host}:{port} "
                  f"(API docs: /docs; inference log: {settings.paths.inference})")
    run_server(settings, host, port)


@app.command("score-batch")
def score_batch(
    batch_ids: list[str] = typer.Argument(..., help="ingested batch id(s) with model inputs"),
    plain: bool = typer.Option(False, "--plain", help="call the scoring function directly, without Prefect"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Score whole batches with @champion into the inference log (what monitoring reads)."""
    settings = cli_settings(home, params)
    with exit_on_user_error("cannot score", FileNotFoundError, ValueError):
        if plain:
            from flows.serving import score_batch as score

            results = [score(settings, b) for b in batch_ids]
        else:
            from flows.prefect_runtime import prepare_prefect, run_tags

            prepare_prefect(settings, server=True).wait()
            from flows.batch_scoring import batch_scoring_flow

            with run_tags(settings):
                results = batch_scoring_flow(settings, batch_ids)
    for r in results:
        counts = ", ".join(f"{k}={v}" for k, v in r.per_modality.items())
        console.print(f"batch {r.batch_id}: {r.records} records with v{r.model_version} ({counts}) → {settings.paths.inference}")


@app.command()
def ui(home: Optional[Path] = HOME_OPTION, params: Optional[Path] = PARAMS_OPTION) -> None:
    """Print the commands that open the MLflow, Prefect and Evidently UIs and the GX Data Docs."""
    for name, command in ui_commands(cli_settings(home, params)).items():
        console.print(f"{name:13s} {command}", soft_wrap=True)


@app.command()
def summary(
    run_id: Optional[str] = typer.Argument(None, help="run id (default: the latest run)"),
    home: Optional[Path] = HOME_OPTION,
    params: Optional[Path] = PARAMS_OPTION,
) -> None:
    """Print a run's summary table again."""
    settings = cli_settings(home, params)
    runs = sorted(settings.paths.runs.glob("*/summary.json")) if settings.paths.runs.exists() else []
    chosen = [p for p in runs if p.parent.name == run_id] if run_id else runs[-1:]
    if not chosen:
        console.print(f"[red]no run {'named ' + run_id if run_id else 'yet'}[/red] under {settings.paths.runs}")
        raise typer.Exit(2)
    print_summary(json.loads(chosen[0].read_text()), chosen[0], settings)


if __name__ == "__main__":
    app()

"""Crash, resume and re-run of the whole lifecycle, as a user runs it: `flywheel run --plain` with fast
params, killed with SIGKILL, then run again; the lake, the feature store, the quarantine and the registry
must hold what one uninterrupted run left in another home, and nothing of the killed attempts may stay.

Every attempt runs in a child forked from a process that imported the libraries once
(tests/flows/fork_runner.py): the real CLI (`flows.cli.app`, the `flywheel` entry point) in its own
process, without an import of torch, MLflow, Feast, GX and DVC per kill.

* Kills at any moment: 6 seeded-random moments (`KILL_ANYWHERE_KILLS=<n>` for more: each kill and its
  re-run cost about 12 CPU-s, 12 kills kept one of the suite's workers busy 4 minutes on 2 cores, 20 seven,
  and `make test` has 17 minutes in all; the suite ran 8 until session 18) over a
  first lifecycle in fresh homes, stratified (one uniform moment in each equal slice) on [0, duration of
  the uninterrupted run measured here) and, a quarter of them, on the time that run took to build and
  push the golden set, counted from the moment the killed run starts building it
  (its staging folder appears): store creation, every data stage, training, the golden set's
  generation, ingest, cleaning, DVC tracking and push, registration, gate, monitoring. No bound
  depends on the machine's speed: a moment after the end is a completed run. After each kill,
  a plain re-run (every other time `--resume` of the killed run) must reach the uninterrupted state and
  leave no `leftovers`. A failure names the seed, the kill and its moment; `KILL_ANYWHERE_ONLY=<index>`
  repeats one kill, `KILL_ANYWHERE_SEED=<n>` draws other moments.
* Kills at points random moments almost never hit, through the test hook FLYWHEEL_FAULT_AT
  (flows/stage_cache.py), one home killed again and again (alternately `--resume RUN_ID` and a plain
  re-run), each attempt continuing where the previous one died:
  * `train-epoch-6` (of 4 + 4 epochs): training resumes from its last epoch checkpoint, and the
    MLflow run the killed attempt left RUNNING is closed (KILLED);
  * `register:after`: a version registered but not recorded: the next attempt must find it, not
    register a second one;
  * `gate:after`: the version gated and promoted but not recorded: the next attempt must take the
    recorded decision instead of gating the champion against itself.
  A data stage killed after its side effects (`transform:after`, once a point here) is covered by the
  random kills, about half of which fall in the data stages, at any point of their writes.
The runs that are not killed (the re-run, the changed parameter) run in-process through the CLI.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import PROJECT, write_fast_lifecycle_params

pytestmark = pytest.mark.slow

METRICS = ("zero_shot_image_acc", "zero_shot_audio_acc", "audio_to_image_r1")
MODEL = "flywheel-imagebind"
SEED = int(os.environ.get("KILL_ANYWHERE_SEED", "13"))  # another seed explores other moments
KILLS = int(os.environ.get("KILL_ANYWHERE_KILLS", "6"))
GOLDEN_KILLS = KILLS // 4  # of the KILLS, those that fall in the golden set's build window
WORK_NAME = re.compile(r"^\.(staging-|trash-|.*\.pid\d+-)")  # features/atomic.py: work of a writer killed mid-write


class ForkRunner:
    """The test's handle on tests/flows/fork_runner.py: start a `flywheel` command in a forked child, kill it,
    wait for it. The child's output goes to a log file."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "FLYWHEEL_FAULT_AT"}
        env["COLUMNS"] = "200"
        self.process = subprocess.Popen([sys.executable, "-m", "tests.flows.fork_runner"], cwd=PROJECT, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self._read() == {"ready": True}

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        assert line, "the fork runner died"
        return json.loads(line)

    def start(self, log: Path, args: list[str], fault: str | None = None) -> int:
        """The child's pid, once it runs `flywheel ARGS` (FLYWHEEL_FAULT_AT=`fault` in its environment)."""
        request = {"args": args, "log": str(log), "env": {"FLYWHEEL_FAULT_AT": fault} if fault else {}}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()["pid"]

    def wait(self, kill: bool = False) -> int:
        """The child's return code once it ended (-9 after SIGKILL); `kill`: SIGKILL it first (0 if it had
        finished already). The fork runner sends the signal to its own unreaped child: never another process."""
        self.process.stdin.write(json.dumps({"then": "kill" if kill else "wait"}) + "\n")
        self.process.stdin.flush()
        return self._read()["returncode"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


@dataclass
class Attempt:
    returncode: int
    output: str
    seconds: float  # from the child's start to its end
    started: float  # time.time() at the child's start


def run_command(home: Path, params: Path, *args: str) -> list[str]:
    return ["run", "--plain", "--home", str(home), "--params", str(params), *args]


@pytest.fixture(scope="module")
def forks():
    runner = ForkRunner()
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


def flywheel_run(forks: ForkRunner, log: Path, home: Path, params: Path, *args: str, fault: str | None = None) -> Attempt:
    """`flywheel run --plain` in a forked child, to its end (or its kill by the fault hook)."""
    started, clock = time.time(), time.perf_counter()
    forks.start(log, run_command(home, params, *args), fault)
    code = forks.wait()
    return Attempt(code, log.read_text(), time.perf_counter() - clock, started)


def run_in_process(home: Path, params: Path, *args: str):
    """`flywheel run --plain` through the CLI in this process (the libraries are imported once)."""
    from flows.cli import app

    return CliRunner().invoke(app, ["run", "--plain", "--home", str(home), "--params", str(params), *args],
                              env={"COLUMNS": "200"})


def summaries(home: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (home / "runs").glob("*/summary.json")}


def newest_summary(home: Path) -> dict:
    """The summary written last: an attempt rewrites its run's summary after every stage."""
    return json.loads(max((home / "runs").glob("*/summary.json"), key=lambda p: p.stat().st_mtime_ns).read_text())


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def lifecycle_state(home: Path) -> dict:
    """What a user finds after the run: rows per store, model versions, aliases, the champion's metrics."""
    from mlflow import MlflowClient

    from models.inputs import load_model_inputs

    batches = sorted(p.name for p in (home / "lake" / "raw").iterdir() if p.is_dir() and not p.name.startswith("."))
    tables = {p.stem: pd.read_parquet(p) for p in sorted((home / "feast" / "data").glob("*.parquet"))}
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    versions = client.search_model_versions(f"name='{MODEL}'")
    experiment = client.get_experiment_by_name("flywheel-lifecycle").experiment_id
    champion = client.get_model_version_by_alias(MODEL, "champion")
    return {
        "batches": batches,
        "raw_rows": {b: _lines(home / "lake" / "raw" / b / "rows.jsonl") for b in batches},
        "clean_rows": {b: len(pd.read_parquet(home / "lake" / "clean" / b / "rows.parquet")) for b in batches},
        "input_rows": {b: len(load_model_inputs(home / "lake" / "inputs" / b)) for b in batches},
        "feature_rows": {name: len(t) for name, t in tables.items()},
        "feature_duplicates": {name: int(t.duplicated(["sample_id", "batch_id"]).sum()) for name, t in tables.items()},
        "quarantine": {f"{p.parent.name}/{p.name}": _lines(p) for p in sorted((home / "quarantine").glob("*/*.jsonl"))},
        "model_versions": sorted(int(v.version) for v in versions),
        "open_runs": len(client.search_runs([experiment], "attributes.status = 'RUNNING'")),  # none left RUNNING
        "champion": str(champion.version),
        "metrics": {k: client.get_run(champion.run_id).data.metrics[k] for k in METRICS},
    }


def leftovers(home: Path) -> list[str]:
    """What a killed attempt may leave that an uninterrupted run never does, and that would matter: work
    folders and temporary files of dead writers (features/atomic.py's names, anywhere in the home), training
    checkpoints (removed once the model is registered), a golden folder unfinished or not pushed, a `.dvc`
    file DVC cannot read, DVC's rwlock still naming a holder. Lock files (fcntl locks, freed when their holder
    dies) are not leftovers: an uninterrupted run leaves them too."""
    from features.lake_versioning import open_lake

    found = [p.relative_to(home).as_posix() for p in home.rglob("*") if WORK_NAME.match(p.name)]
    found += [p.relative_to(home).as_posix() for p in (home / "state" / "checkpoints").glob("*")]
    lake = open_lake(home)
    for golden in (p for p in (home / "golden").iterdir() if p.is_dir() and not p.name.startswith(".")):
        relative = golden.relative_to(home).as_posix()
        if not (golden / "labels.json").is_file() or lake.pushed_version(relative) is None:
            found.append(f"{relative} (unfinished or not pushed)")
    for output in tracked_outputs(home):
        if lake._recorded_version(output) is None:  # the reader that does not repair
            found.append(f"{output}.dvc (unreadable)")
    rwlock = home / ".dvc" / "tmp" / "rwlock"
    if rwlock.exists():
        held = json.loads(rwlock.read_text())
        if held.get("read") or held.get("write"):
            found.append(f".dvc/tmp/rwlock holds {held}")
    return sorted(found)


def tracked_outputs(home: Path) -> list[str]:
    """The lake's DVC-tracked outputs, relative to the home."""
    return sorted(p.relative_to(home).as_posix().removesuffix(".dvc") for p in home.rglob("*.dvc")
                  if p.is_file() and ".dvc" not in p.relative_to(home).parts[:-1])


def killed_during(home: Path) -> str:
    """Where a killed first run was, read from what it left: the first stage without a record, or the golden
    set's build (its staging folder) or tracking and push (a finished folder not recorded as pushed)."""
    from features.lake_versioning import open_lake

    golden = home / "golden"
    if golden.is_dir() and any(p.name.startswith(".staging-") for p in golden.iterdir()):
        return "golden:build"
    finished = [p for p in golden.iterdir() if p.is_dir() and not p.name.startswith(".")] if golden.is_dir() else []
    if finished and open_lake(home).pushed_version(finished[0].relative_to(home).as_posix()) is None:
        return "golden:track-push"
    done = {stage for p in home.glob("runs/*/summary.json") for stage in json.loads(p.read_text()).get("cache", {})}
    if not (home / "runs").exists():
        return "start"
    order = ["ingest", "clean", "validate", "transform", "label", "version", "train", "register", "gate", "monitor",
             "react"]
    return next((stage for stage in order if stage not in done), "end")


def wait_for_golden_build(home: Path, pid: int) -> bool:
    """Poll until the run at `home` starts building the golden set (its staging folder appears); False when the
    child ended first."""
    import psutil

    golden = home / "golden"
    while not (golden.is_dir() and any(p.name.startswith(".staging-") for p in golden.iterdir())):
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:  # unreaped until the fork runner is told
            return False
        time.sleep(0.005)
    return True


@pytest.fixture(scope="module")
def params(tmp_path_factory, small_golden_batch) -> Path:
    # A small golden set, its build still many steps.
    path = write_fast_lifecycle_params(tmp_path_factory.mktemp("params") / "params.yaml", golden=small_golden_batch)
    raw = yaml.safe_load(path.read_text())
    raw["gate"].update(latency_items=10)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def landing(demo_batch_factory) -> Path:
    return demo_batch_factory(samples=40, seed=11)


@dataclass
class Uninterrupted:
    """One run that nobody killed: the state every crashed-and-resumed run must end in."""

    home: Path
    state: dict
    seconds: float  # the child's start to its end
    golden_seconds: float  # from the golden set's first file to its recorded push
    outputs: list[str]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, params, landing, forks, logs) -> Uninterrupted:
    home = tmp_path_factory.mktemp("uninterrupted")
    done = flywheel_run(forks, logs / "uninterrupted.log", home, params, "--source", str(landing))
    assert done.returncode == 0, done.output
    assert leftovers(home) == []
    (golden,) = (p for p in (home / "golden").iterdir() if p.is_dir())
    first_file = min(p.stat().st_mtime for p in golden.rglob("*") if p.is_file())
    pushed = max(p.stat().st_mtime for p in (home / ".dvc" / "tmp" / "flywheel-pushed").iterdir() if "golden" in p.name)
    return Uninterrupted(home, lifecycle_state(home), done.seconds, pushed - first_file, tracked_outputs(home))


def stratified(rng: np.random.Generator, span: float, n: int) -> list[float]:
    """`n` moments on [0, span): one uniform in each of n equal slices, so few kills still cover the whole run."""
    return [(i + rng.uniform()) * span / n for i in range(n)]


def test_a_run_killed_at_any_moment_resumes_to_the_uninterrupted_state(tmp_path_factory, params, landing, forks, logs,
                                                                       uninterrupted):
    reference = dict(uninterrupted.state)
    reference_metrics = reference.pop("metrics")
    rng = np.random.default_rng(SEED)
    # (moment, whether it counts from the start of the golden set's build rather than from the run's start)
    moments = [(t, False) for t in stratified(rng, uninterrupted.seconds, KILLS - GOLDEN_KILLS)] + [
        (t, True) for t in stratified(rng, uninterrupted.golden_seconds, GOLDEN_KILLS)]
    only = os.environ.get("KILL_ANYWHERE_ONLY")
    failures, landed = [], Counter()
    for index, (moment, in_golden) in enumerate(moments):
        if only is not None and index != int(only):
            continue
        where = (f"seed {SEED}, kill {index} at {moment:.2f} s of "
                 + (f"the golden set's {uninterrupted.golden_seconds:.2f} s" if in_golden else f"{uninterrupted.seconds:.2f} s"))
        home = tmp_path_factory.mktemp(f"killed{index}")
        log = logs / f"killed{index}.log"
        pid = forks.start(log, run_command(home, params, "--source", str(landing)))
        if not in_golden or wait_for_golden_build(home, pid):
            time.sleep(moment)
        code = forks.wait(kill=True)  # 0: it ended before the moment, a completed run
        if code != -signal.SIGKILL:
            assert code == 0, f"{where}: the run failed before its kill\n{log.read_text()[-4000:]}"
        landed[killed_during(home) if code else "not killed"] += 1
        running = [s for s in summaries(home).values() if s["status"] == "running"] if (home / "runs").exists() else []
        how = ("--resume", running[0]["run_id"]) if index % 2 and running else ("--source", str(landing))
        rerun = flywheel_run(forks, logs / f"rerun{index}.log", home, params, *how)
        if rerun.returncode != 0:
            failures.append(f"{where}: the re-run ({how[0]}) failed\n{rerun.output[-3000:]}")
            continue
        state = lifecycle_state(home)
        metrics = state.pop("metrics")
        problems = [f"state {state} != uninterrupted {reference}"] if state != reference else []
        if metrics != pytest.approx(reference_metrics, abs=0.02):
            problems.append(f"champion metrics {metrics} != {reference_metrics}")
        if leftovers(home):
            problems.append(f"leftovers {leftovers(home)}")
        if tracked_outputs(home) != uninterrupted.outputs:
            problems.append(f"tracked {tracked_outputs(home)} != {uninterrupted.outputs}")
        if problems:
            failures.append(f"{where} ({how[0]} re-run): " + "; ".join(problems))
    print(f"uninterrupted run {uninterrupted.seconds:.1f} s, golden set built and pushed in "
          f"{uninterrupted.golden_seconds:.2f} s; kills landed in {dict(landed)}")
    assert not failures, "\n".join(failures)
    assert sum(n for stage, n in landed.items() if stage != "not killed") >= 1  # the moments do fall inside runs


def test_a_run_killed_in_training_and_after_registering_and_gating_resumes_to_the_uninterrupted_state(
        tmp_path_factory, params, landing, forks, logs, uninterrupted):
    import torch

    reference_home, reference = uninterrupted.home, uninterrupted.state
    home = tmp_path_factory.mktemp("killed")
    points = ["train-epoch-6", "register:after", "gate:after"]
    order = ["ingest", "clean", "validate", "transform", "label", "version", "train", "register", "gate", "monitor"]
    previous = None
    for attempt, point in enumerate(points):
        how = ("--resume", previous["run_id"]) if attempt % 2 and previous else ("--source", str(landing))
        killed = flywheel_run(forks, logs / f"fault-{attempt}.log", home, params, *how, fault=point)
        assert killed.returncode == -signal.SIGKILL, f"{point}: {killed.output}"
        summary = newest_summary(home)
        assert summary["status"] == "running" and summary["finished_at"] is None, point  # the kill left no verdict
        stage = point.split(":")[0] if ":" in point else "train"
        # Everything recorded before this point was re-loaded, not recomputed, by this attempt.
        done_before = order[:order.index(stage)]
        if previous is not None:
            reused = [s for s in done_before if summary["cache"].get(s, {}).get("cached")]
            recorded_earlier = [s for s in done_before if s in previous["cache"] and s != previous_stage]
            assert set(recorded_earlier) <= set(reused), (point, summary["cache"])
        if how[0] == "--resume":
            assert summary["run_id"] == previous["run_id"] and summary["attempts"] >= 2
        if point == "train-epoch-6":
            (checkpoint,) = (home / "state" / "checkpoints").glob("*/last.pt")
            state = torch.load(checkpoint, weights_only=True)
            assert (state["stage"], state["epoch"]) == ("audio_image", 1)  # epoch 6 of 4 + 4
        previous, previous_stage = summary, stage
    finished = flywheel_run(forks, logs / "fault-finished.log", home, params, "--resume", previous["run_id"])
    assert finished.returncode == 0, finished.output
    summary = newest_summary(home)
    assert summary["status"] == "succeeded" and summary["run_id"] == previous["run_id"]
    assert not any((home / "state" / "checkpoints").glob("*/last.pt"))  # removed once the model was registered
    state = lifecycle_state(home)
    metrics, expected = state.pop("metrics"), dict(reference)
    expected_metrics = expected.pop("metrics")
    assert state == expected
    assert metrics == pytest.approx(expected_metrics, abs=0.02)
    assert leftovers(home) == []
    # One record per stage, as in the uninterrupted home: no stage was recorded twice under other inputs.
    assert Counter(p.name.rsplit("-", 1)[0] for p in (home / "state" / "stages").iterdir()) == Counter(
        p.name.rsplit("-", 1)[0] for p in (reference_home / "state" / "stages").iterdir())


def test_a_rerun_of_a_completed_run_recomputes_nothing(params, landing, uninterrupted):
    home, reference = uninterrupted.home, uninterrupted.state
    records = {p.name: p.stat().st_mtime_ns for p in (home / "state" / "stages").iterdir()}
    again = run_in_process(home, params, "--source", str(landing))
    assert again.exit_code == 0, again.output
    summary = newest_summary(home)
    assert summary["status"] == "succeeded"
    assert {stage: entry["cached"] for stage, entry in summary["cache"].items()} == dict.fromkeys(
        ["ingest", "clean", "validate", "transform", "label", "version", "train", "register", "gate", "monitor", "react"],
        True)
    assert {p.name: p.stat().st_mtime_ns for p in (home / "state" / "stages").iterdir()} == records  # none rewritten
    assert summary["model"]["version"] == "1" and summary["train"] == summaries(home)[
        summary["cache"]["train"]["computed_by"]]["train"]
    assert "(cached)" in again.output
    assert lifecycle_state(home) == reference  # no second model version, no duplicated rows
    # (how much faster a re-run is, is benchmarks/rerun_cache.py's figure: a wall-clock ratio flips under load)


def test_a_changed_parameter_recomputes_only_the_stages_downstream_of_it(tmp_path, params, landing, uninterrupted):
    home, reference = uninterrupted.home, uninterrupted.state
    changed = yaml.safe_load(params.read_text())
    changed["monitor"]["feature_threshold"] = 0.2
    changed_params = tmp_path / "params.yaml"
    changed_params.write_text(yaml.safe_dump(changed))
    again = run_in_process(home, changed_params, "--source", str(landing))
    assert again.exit_code == 0, again.output
    cached = {stage: entry["cached"] for stage, entry in newest_summary(home)["cache"].items()}
    assert [stage for stage, hit in cached.items() if not hit] == ["monitor", "react"]
    assert lifecycle_state(home) == reference


def test_resume_names_an_unknown_or_succeeded_run(params, uninterrupted):
    home = uninterrupted.home
    unknown = run_in_process(home, params, "--resume", "no-such-run")
    assert unknown.exit_code == 2 and "no run 'no-such-run'" in unknown.output
    succeeded = next(s["run_id"] for s in summaries(home).values() if s["status"] == "succeeded")
    done = run_in_process(home, params, "--resume", succeeded)
    output = " ".join(done.output.split())
    assert done.exit_code == 2 and "succeeded already" in output and "nothing to resume" in output


def test_a_golden_set_a_kill_left_half_built_or_unpushed_is_finished_by_the_next_call(tmp_path, params):
    """Issue 13's wedge: a run killed while the golden set was built left `golden/<name>/landing` with its
    manifest, and every later run refused it ("already holds a landing batch"); a kill between DVC's track and
    push left the version never pushed. Both now finish on the next call, with the same rows."""
    import shutil

    from features.atomic import _HOST, STAGING_PREFIX
    from examples.digits.demo import generate_demo_batch
    from flows.model_stages import build_golden_set
    from flows.settings import load_settings

    settings = load_settings(tmp_path / "home", params)
    golden, version = build_golden_set(settings)
    folder = settings.paths.home / version.split("@")[0]
    remote = settings.paths.home / "dvc-remote"

    shutil.rmtree(remote)  # killed between track and push: the version is on no remote
    (settings.paths.home / ".dvc" / "tmp" / "flywheel-pushed").rename(tmp_path / "pushed-aside")
    again, same = build_golden_set(settings)
    assert same == version and any(p.is_file() for p in remote.rglob("*"))

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has any more: the writer of the staging folder below
    orphan = folder.with_name(f"{STAGING_PREFIX}{folder.name}.pid{dead.pid}-{_HOST}.x")
    folder.rename(orphan)  # a build killed before its publish ...
    generate_demo_batch(folder / "landing", samples=3, seed=0)  # ... and what the old code left: a half folder
    rebuilt, _ = build_golden_set(settings)
    assert (folder / "labels.json").is_file() and not orphan.exists()
    assert list(rebuilt.label) == list(golden.label) and (rebuilt.image == golden.image).all()

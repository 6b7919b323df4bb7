"""Shared fixtures: telemetry off before anything imports a library, the digits example's golden batch,
small demo batches, fast params."""

from __future__ import annotations

import os

# Each pytest-xdist worker gets its share of the cores for the math libraries' thread pools (torch's OpenMP,
# numpy's BLAS), inherited by the processes a test starts. Two workers on two cores each running two OpenMP
# threads stall one another (a parallel region waits for a thread the other worker has descheduled): a
# lifecycle run took 15 % longer so. Set before anything imports torch or numpy; a value given outside stays.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

from features.env import apply_process_environment  # noqa: E402

apply_process_environment()

import shutil  # noqa: E402
import tempfile  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

from examples.digits.demo import generate_demo_batch  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
# The machine's shared Prefect server (flows/prefect_server.py) is a user's: a test session that starts one uses
# its own folder, so no test writes into the user's server database or stops their server.
os.environ.setdefault("FLYWHEEL_PREFECT_SERVER_HOME", tempfile.mkdtemp(prefix="flywheel-test-prefect-server-"))
SMALL_GOLDEN_SAMPLES = 40  # a golden set for fast tests: every class, few latency items, seconds to score


def ensure_example_golden(params_path: Path = PROJECT / "params.yaml") -> Path:
    """The digits example's golden batch (task.golden of the root params.yaml), generated as `flywheel demo-data
    --golden` would when missing: every test that loads the root params.yaml needs it. Written beside the target
    and renamed into place, so an interrupted session leaves no half batch behind."""
    from flows.settings import build_task, load_params

    params = load_params(params_path)
    golden = (params_path.resolve().parent / params.task.golden).resolve()
    if (golden / "manifest.jsonl").is_file():
        return golden
    golden.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".golden-", dir=golden.parent))
    demo = params.demo
    generate_demo_batch(work / "batch", samples=demo.golden_samples, seed=demo.golden_seed, golden=True,
                        **demo.options)
    try:
        (work / "batch").rename(golden)
    except OSError:  # another session made it first
        pass
    shutil.rmtree(work, ignore_errors=True)
    build_task(params, params_path)  # the batch must pass the start-up checks every run makes
    return golden


EXAMPLE_GOLDEN = ensure_example_golden()  # at import: test modules load the root params.yaml while being collected


@pytest.fixture(scope="session")
def small_golden_batch(tmp_path_factory) -> Path:
    """A 40-row golden batch of the digits example (every row labelled, no faults), made once per session:
    point task.golden at it (write_fast_lifecycle_params(path, golden=small_golden_batch)) for a quick gate."""
    from flows.settings import load_params

    demo = load_params(PROJECT / "params.yaml").demo
    out = tmp_path_factory.mktemp("golden") / "golden"
    generate_demo_batch(out, samples=SMALL_GOLDEN_SAMPLES, seed=demo.golden_seed, golden=True, **demo.options)
    return out


@pytest.fixture(scope="session")
def demo_batch_factory(tmp_path_factory):
    """Demo batches generated once per session and shared (read-only) by tests."""
    cache: dict[tuple, Path] = {}

    def make(samples: int = 60, seed: int = 1, **kwargs) -> Path:
        key = (samples, seed, tuple(sorted(kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("landing") / f"batch-s{seed}"
            generate_demo_batch(out, samples=samples, seed=seed, **kwargs)
            cache[key] = out
        return cache[key]

    return make


UNREACHABLE_LATENCY_BOUNDS = {"max": 60_000.0, "max_drop": 60_000.0}  # a minute per item: no machine load flips them


def with_unreachable_latency_bounds(policy):
    """The shipped gate policy with its p95-latency bounds replaced by ones no machine load reaches: a test
    judges the decision logic; whether the latency budget holds is a benchmark's question (benchmarks/)."""
    from dataclasses import replace

    from models.gate import MetricThreshold

    latency = MetricThreshold(max=UNREACHABLE_LATENCY_BOUNDS["max"], max_drop=UNREACHABLE_LATENCY_BOUNDS["max_drop"])
    return replace(policy, thresholds={**policy.thresholds, "p95_latency_ms": latency})


def example_params() -> dict:
    """The root params.yaml as a dict to edit and write elsewhere: task.golden absolute, so the copy still
    finds the example's golden batch wherever it is written."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["task"]["golden"] = str(EXAMPLE_GOLDEN)
    return params


def write_fast_lifecycle_params(path: Path, golden: Path | None = None) -> Path:
    """params.yaml for whole-lifecycle tests: few epochs, the golden batch `golden` (the small_golden_batch
    fixture for a quick gate; None: the example's own), and a gate every model passes, so the second run is
    always promoted: accuracies may fall to 0, and p95 latency (wall clock, so machine load moves it) is
    judged against bounds no load reaches. Thresholds carry no direction: the family's own (lower latency is
    better) applies, as for a user. task.golden is written absolute: the file lands outside the example."""
    from models.family import load_family
    from models.gate import HIGHER

    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["train"].update(epochs_stage1=4, epochs_stage2=4)
    params["task"]["golden"] = str(Path(golden or EXAMPLE_GOLDEN).resolve())
    directions = load_family("imagebind").metric_directions()
    gate = params["gate"]["families"]["imagebind"]
    gate["thresholds"] = {
        name: {"min": 0.0, "max_drop": 1.0} if directions[name] == HIGHER
        else UNREACHABLE_LATENCY_BOUNDS if name == "p95_latency_ms" else threshold  # size: deterministic, as shipped
        for name, threshold in gate["thresholds"].items()}
    gate["slices"] = {field: {name: {"min": 0.0, "max_drop": 1.0} for name in metrics}
                      for field, metrics in gate["slices"].items()}  # a few epochs: any class may be 0
    path.write_text(yaml.safe_dump(params))
    return path


@contextmanager
def frequent_system_metrics():
    """MLflow samples system metrics every 0.5 s: short test trainings end before its default first sample."""
    saved = os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "0.5"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", None)
        else:
            os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = saved


@pytest.fixture
def fast_params(tmp_path, small_golden_batch) -> Path:
    """params.yaml with few epochs and a small golden set: the same code path, seconds not minutes."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["train"].update(epochs_stage1=4, epochs_stage2=4)
    params["task"]["golden"] = str(small_golden_batch)
    params["gate"]["families"]["imagebind"]["thresholds"] = {
        "zero_shot_image_acc": {"min": 0.0, "max_drop": 1.0},
        "zero_shot_audio_acc": {"min": 0.0, "max_drop": 1.0},
        "audio_to_image_r1": {"min": 0.0, "max_drop": 1.0},
    }
    # a 4-epoch model of 80 rows hears no held-out speech: every slice is judged, none can fail
    slices = params["gate"]["families"]["imagebind"].get("slices", {})
    for metrics in slices.values():
        metrics.update({name: {"min": 0.0, "max_drop": 1.0} for name in metrics})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(autouse=True)
def no_tracking_uri_leak(request):
    """A test that leaves MLFLOW_TRACKING_URI changed (mlflow.set_tracking_uri writes it) would point every later
    test's settings in this worker at its store: put it back, and fail the test that leaked it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    after = os.environ.get("MLFLOW_TRACKING_URI")
    if after != before:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
        pytest.fail(f"{request.node.nodeid} left MLFLOW_TRACKING_URI={after!r} (was {before!r}); use MlflowClient(uri) "
                    "or monkeypatch.setenv instead of mlflow.set_tracking_uri")


def session_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test session's temporary folder, the same for every pytest-xdist worker (each has its own under it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def shared_cache_dir(tmp_path_factory):
    """flywheel's cache folder (features.env.cache_dir: the empty MLflow store, the class prompts' embeddings) in
    this session's temporary folder, shared by the xdist workers and the processes the tests start, never the
    user's ~/.cache."""
    if os.environ.get("FLYWHEEL_CACHE_DIR"):
        yield Path(os.environ["FLYWHEEL_CACHE_DIR"])
        return
    folder = session_folder(tmp_path_factory) / "flywheel-cache"
    os.environ["FLYWHEEL_CACHE_DIR"] = str(folder)
    yield folder
    os.environ.pop("FLYWHEEL_CACHE_DIR", None)


@pytest.fixture(scope="session", autouse=True)
def bounded_prefect_event_drains():
    """Prefect's test harness drains every events worker of the process with no time limit before it stops
    its server. On an xdist worker that ran other Prefect tests first, that drain was seen to wait forever
    (test_stage_retries' harness teardown, both workers idle): an events worker of an earlier, stopped
    harness never finishes. 15 s leaves real events ample time; then the harness goes on and stops. It was a
    minute, which that teardown was seen to wait out whole (60.3 s, in a suite where the files ran in another order)."""
    from prefect.events.worker import EventsWorker

    original = EventsWorker.drain_all.__func__

    def drain_all(cls, timeout: float | None = None, at_exit: bool = True):
        return original(cls, 15.0 if timeout is None else timeout, at_exit)

    EventsWorker.drain_all = classmethod(drain_all)
    yield
    EventsWorker.drain_all = classmethod(original)


def pytest_collection_modifyitems(session, config, items):
    """Files marked slow first (in their collected order, each file's tests kept together and in order), the
    quick ones after: pytest-xdist hands out whole files (`--dist loadfile`) in this order, so the quick
    files fill in around the long ones instead of one long file running alone at the end of the session."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With FLYWHEEL_TEST_CPU_LOG set to a folder, each worker appends a line per test to a file there: the CPU
    seconds (user + system) of the worker and of the child processes it reaped while the test ran (its setup,
    a module fixture's included, and teardown), and the wall seconds. docs/reference/testing.md sums them by file."""
    folder = os.environ.get("FLYWHEEL_TEST_CPU_LOG")
    if not folder:
        yield
        return
    import json
    import resource
    import time

    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    cpu_before, wall_before = cpu(), time.perf_counter()
    yield
    line = {"test": item.nodeid, "cpu_s": round(cpu() - cpu_before, 2),
            "wall_s": round(time.perf_counter() - wall_before, 2)}
    path = Path(folder) / f"cpu-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log:
        log.write(json.dumps(line) + "\n")

"""Stage records and cache keys: a completed stage is recorded once and reused, never recomputed.

Every lifecycle stage gets a key: a hash of the stage's code version (the source of the modules
that implement it) and the params.yaml entries it reads, both declared once in the stage table
(`flows/stages.py`: `Stage.code`, `Stage.params`), the keys
of the stages it reads from (`upstream`) and whatever else its result depends on (`extra`: the
batch id for ingest, the training window and the lake's data versions for train, the champion
for monitor). Because keys chain, a changed parameter or a new batch changes the key of the
stage that reads it and of every stage downstream of it, and of no other.

When a stage finishes, its record `state/stages/<key>.json` (outputs needed downstream, seconds,
the run that computed it) is written atomically (temporary file + os.replace) *after* every side
effect of the stage (lake, feature store, quarantine, registry), so a process killed at any point
either left a complete record or none; without one the stage is computed again, which every
stage tolerates (writes replace, registration and promotion look for what an earlier attempt left).
A stage whose record exists is not recomputed: its outputs are re-loaded from the lake and the
stores they name (`restore`); a record whose files are gone (FileNotFoundError) is computed again. `flywheel run --resume RUN_ID` and a plain re-run of the same batch
both walk the stages in order and so continue from the first one without a record.

Why our own records rather than Prefect's cache policies: `flywheel run --plain` (and the DVC
stages, the benchmarks) run without Prefect and need the same behaviour, and the outputs worth
keeping are already in the lake and the stores, so a record holds names and counts rather than
pickled frames in a second result store. The Prefect driver runs a cached stage's `restore` as a
task named "<stage> (cached)" (see `is_cached_restore`), so the UI shows which stages were reused.

`FLYWHEEL_FAULT_AT` is a test hook (tests/flows/test_resume.py): the process kills itself with
SIGKILL at `<stage>:before` (nothing of the stage done), `<stage>:after` (all its side effects done,
its record not yet written) or `train-epoch-N` (after the N-th training epoch and its checkpoint,
counted over both training stages from 1).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

from features.io import save_json

FAULT_ENV = "FLYWHEEL_FAULT_AT"
log = logging.getLogger(__name__)

def fault_point(point: str) -> None:
    """Test hook: SIGKILL this process when FLYWHEEL_FAULT_AT names `point` (see the module docstring)."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def epoch_fault_points(on_epoch: Callable[[str, int, dict[str, float]], None], first_stage: str,
                       epochs_first_stage: int) -> Callable[[str, int, dict[str, float]], None]:
    """`on_epoch` that first passes the fault point `train-epoch-N` (N counts epochs over both stages)."""
    if not os.environ.get(FAULT_ENV, "").startswith("train-epoch-"):
        return on_epoch

    def hooked(stage: str, epoch: int, metrics: dict[str, float]) -> None:
        on_epoch(stage, epoch, metrics)
        fault_point(f"train-epoch-{epoch + 1 + (0 if stage == first_stage else epochs_first_stage)}")

    return hooked


@lru_cache(maxsize=None)
def module_digest(module: str) -> str:
    """sha256 of a module's source file, or of every .py file of a package; found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"stage code module {module!r} not found; a stage's `code` names importable modules")
    origin = Path(spec.origin)
    files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(origin.parent).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_version(stage: Any) -> str:
    """The stage's code version: a hash of the source of its declared modules (`stage`: its table entry)."""
    digest = hashlib.sha256()
    for module in stage.code:
        digest.update(f"{module}:{module_digest(module)}".encode())
    return digest.hexdigest()[:16]


def params_of(stage: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The params.yaml entries `stage` declares it reads, from the params as dumped by alias (`validate`, not `validate_`)."""
    chosen: dict[str, Any] = {}
    for entry in stage.params:
        section, _, key = entry.partition(".")
        chosen[entry] = params[section][key] if key else params[section]
    return chosen


def key_inputs(stage: Any, params: dict[str, Any], upstream: Sequence[str] = (), extra: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """What a stage's key hashes: its code version, its params, its upstream keys and `extra` (as JSON).
    `stage`: its entry in the stage table (flows.stages.Stage: name, code, params)."""
    inputs = {"stage": stage.name, "code": code_version(stage), "params": params_of(stage, params),
              "upstream": list(upstream), "extra": extra or {}}
    return json.loads(json.dumps(inputs, sort_keys=True, default=str))


def stage_key(inputs: dict[str, Any]) -> str:
    """`<stage>-<hash of key_inputs>`."""
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return f"{inputs['stage']}-{digest[:20]}"


@dataclass(frozen=True)
class StageRecord:
    """A completed stage: what a later run needs to reuse it instead of computing it again."""

    stage: str
    key: str
    run_id: str  # the run that computed it
    outputs: dict[str, Any]  # JSON: what downstream stages and the run summary read
    seconds: float  # what computing it took
    inputs: dict[str, Any] = field(default_factory=dict)  # what its key hashes (key_inputs), for a human asking why
    finished_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())


class StageStore:
    """One JSON file per completed stage under `directory` (FLYWHEEL_HOME/state/stages)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self, key: str) -> StageRecord | None:
        path = self.directory / f"{key}.json"
        if not path.is_file():
            return None
        return StageRecord(**json.loads(path.read_text()))

    def save(self, record: StageRecord) -> Path:
        path = self.directory / f"{record.key}.json"
        save_json(path, asdict(record))  # temporary sibling + os.replace: complete or absent
        return path


def is_cached_restore(fn: Callable[..., Any]) -> bool:
    """True for the function a driver is given to re-load a cached stage's outputs (no retries, no subflow)."""
    return getattr(fn, "flywheel_cached_key", None) is not None


StageCall = Callable[..., Any]


class StageRunner:
    """Runs a stage unless its record exists, then records it; `entries` collects what happened per stage.

    `reuse=False` (`flywheel run --no-cache`) computes every stage again and writes fresh records.
    """

    def __init__(self, store: StageStore, params: dict[str, Any], run_id: str, call: StageCall,
                 reuse: bool = True, entries: dict[str, dict[str, Any]] | None = None,
                 table: Sequence[Any] = ()) -> None:
        self.store, self.params, self.run_id, self.call, self.reuse = store, params, run_id, call, reuse
        self.entries = entries if entries is not None else {}
        self.table = {stage.name: stage for stage in table}  # the run's stage table (a project's stages included), by name
        self._inputs: dict[str, dict[str, Any]] = {}  # key -> what it hashes, written into the record

    def key(self, stage: str, upstream: Sequence[str] = (), **extra: Any) -> str:
        if stage not in self.table:
            raise ValueError(f"stage {stage!r} is not in this run's table: {sorted(self.table)}")
        inputs = key_inputs(self.table[stage], self.params, upstream, extra)
        key = stage_key(inputs)
        self._inputs[key] = inputs
        return key

    def note(self, stage: str, key: str, outputs: dict[str, Any], seconds: float, reused: bool) -> None:
        """Record a stage that always runs because it is its own cache (ingest skips a batch it holds)."""
        fault_point(f"{stage}:after")
        record = self.store.load(key) if reused else None
        if record is None:
            record = StageRecord(stage, key, self.run_id, json.loads(json.dumps(outputs, default=str)), seconds,
                                 self._inputs.get(key, {}))
            self.store.save(record)
        self.entries[stage] = {"key": key, "cached": reused, "computed_by": record.run_id, "seconds": record.seconds}

    def run(self, stage: str, key: str, compute: Callable[[str], tuple[Any, dict[str, Any]]],
            restore: Callable[[dict[str, Any]], Any]) -> tuple[Any, dict[str, Any], bool]:
        """(value, recorded outputs, whether they were reused). `compute(key)` does the stage and its
        side effects and returns (value, JSON outputs); `restore(outputs)` re-loads the value from disk."""
        fault_point(f"{stage}:before")
        found = self.store.load(key) if self.reuse else None
        if found is not None:
            def restore_stage(outputs: dict[str, Any]) -> Any:
                return restore(outputs)

            restore_stage.flywheel_cached_key = key  # type: ignore[attr-defined]
            try:
                value = self.call(stage, restore_stage, found.outputs)
            except FileNotFoundError as err:  # the lake lost what the record names: compute it again
                log.warning("stage %s: record %s names outputs that are gone (%s); computing it again", stage, key, err)
            else:
                self.entries[stage] = {"key": key, "cached": True, "computed_by": found.run_id, "seconds": found.seconds}
                return value, found.outputs, True
        started = time.perf_counter()
        value, outputs = compute(key)
        outputs = json.loads(json.dumps(outputs, default=str))  # what a reuse will read back
        seconds = round(time.perf_counter() - started, 3)
        fault_point(f"{stage}:after")
        self.store.save(StageRecord(stage, key, self.run_id, outputs, seconds, self._inputs.get(key, {})))
        self.entries[stage] = {"key": key, "cached": False, "computed_by": self.run_id, "seconds": seconds}
        return value, outputs, False

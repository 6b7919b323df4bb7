"""Which lock guards the champion's compare-and-set, chosen once from the settings.

`models.registry_lock` has the locks a store offers itself (a file lock beside SQLite or in a shared
folder, a Postgres advisory lock). An MLflow server over HTTP offers none, so the choice is:
- `FLYWHEEL_REGISTRY_LOCK_URI` set: that lock (postgresql://… or file:///folder), as the user said;
- a store that locks itself (sqlite, file, postgresql tracking URI): its lock;
- otherwise (an `mlflow server`), a file lock under FLYWHEEL_HOME/state/locks, which serialises every
  promoter of this machine's state folder, and with a Prefect server (PREFECT_API_URL) also a Prefect
  global concurrency limit of 1 per registered model, which serialises promoters on every machine that
  talks to that server. The file lock is taken first in both cases, so a promoter that sees
  PREFECT_API_URL and one that does not (a shell beside a served deployment) still exclude each other.

A holder killed while holding: the kernel frees the file lock at once; Prefect frees the limit's slot
when its lease lapses (PREFECT_LEASE_S, renewed while held, plus the server's repossessor loop, 15 s by
default), well inside the waiters' DEFAULT_TIMEOUT_S, so a crash delays the next promotion, never wedges it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal

from flows.settings import Settings
from models.registry_lock import DEFAULT_TIMEOUT_S, LockUnavailable, champion_lock, locks_itself, probe_lock

logger = logging.getLogger("flywheel.registry_lock")

LOCKS_DIR = "state/locks"  # under FLYWHEEL_HOME: the champion's file lock when the store has none
PREFECT_LEASE_S = 60.0  # the shortest lease Prefect's server grants (ge=60): how long a dead holder blocks
LIMIT_PREFIX = "flywheel-champion-"


class RegistryLockUnusable(ValueError):
    """The chosen lock cannot be taken at all (server unreachable, limit misconfigured): a configuration error."""


def limit_name(model_name: str) -> str:
    """The Prefect global concurrency limit of one registered model (Prefect bans some characters in names)."""
    return LIMIT_PREFIX + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_name)


@dataclass(frozen=True)
class RegistryLockChoice:
    """The champion lock of this process: call it with a registered model name for the held lock."""

    kind: Literal["uri", "home", "prefect"]
    uri: str  # the lock URI (kind "uri") or the FLYWHEEL_HOME lock folder as file:///… (home, prefect)
    prefect_api_url: str | None = None  # kind "prefect": the server whose limits lock
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __call__(self, model_name: str):
        if self.kind != "prefect":
            return champion_lock(self.uri, model_name, self.timeout_s)
        return _home_then_prefect(self, model_name)

    def describe(self) -> str:
        return {"uri": f"lock {self.uri}",
                "home": f"file lock in {self.uri} (this machine only)",
                "prefect": f"file lock in {self.uri} and the Prefect concurrency limits of {self.prefect_api_url}"}[self.kind]

    def check(self, model_name: str) -> None:
        """Reach what the lock needs (the database, the folder, the Prefect limit, created if missing), or
        raise RegistryLockUnusable naming it: called at start-up, before any stage runs."""
        try:
            probe_lock(self.uri)
        except ValueError as err:
            raise RegistryLockUnusable(str(err)) from err
        if self.kind == "prefect":
            ensure_limit(self.prefect_api_url or "", limit_name(model_name))


_warned: set[str] = set()


def choose_registry_lock(settings: Settings) -> RegistryLockChoice:
    """The champion lock these settings call for (see the module docstring)."""
    if settings.registry_lock_uri:
        return RegistryLockChoice("uri", settings.registry_lock_uri)
    if locks_itself(settings.tracking_uri):
        return RegistryLockChoice("uri", settings.tracking_uri)
    home = (settings.paths.home / LOCKS_DIR).as_uri()
    if settings.prefect_api_url:
        return RegistryLockChoice("prefect", home, settings.prefect_api_url)
    if settings.tracking_uri not in _warned:  # once per process, not once per registry access
        _warned.add(settings.tracking_uri)
        logger.warning("the registry lock of %s is a file lock under %s: it serialises promoters on this machine "
                       "only; promoters on other machines need FLYWHEEL_REGISTRY_LOCK_URI (the server's postgresql:// "
                       "database) or a Prefect server (PREFECT_API_URL)", settings.tracking_uri, home)
    return RegistryLockChoice("home", home)


def check_registry_lock(settings: Settings) -> RegistryLockChoice:
    """The start-up check of a run that may promote: the chosen lock can be taken."""
    choice = choose_registry_lock(settings)
    choice.check(settings.params.registry.model_name or "")
    return choice


@contextmanager
def _home_then_prefect(choice: RegistryLockChoice, model_name: str) -> Iterator[None]:
    with champion_lock(choice.uri, model_name, choice.timeout_s), \
            prefect_limit(choice.prefect_api_url or "", model_name, choice.timeout_s):
        yield


@contextmanager
def prefect_limit(api_url: str, model_name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """One slot of the model's Prefect global concurrency limit (limit 1), leased and renewed while held.

    `strict=True`: a limit that vanished raises instead of being silently not enforced (STACK_NOTES).
    """
    from prefect.concurrency.sync import concurrency
    from prefect.settings import PREFECT_API_URL, temporary_settings

    name = limit_name(model_name)
    ensure_limit(api_url, name)
    acquired = False
    try:
        with temporary_settings({PREFECT_API_URL: api_url}), \
                concurrency(name, occupy=1, timeout_seconds=timeout_s, lease_duration=PREFECT_LEASE_S, strict=True):
            acquired = True
            yield
    except TimeoutError as err:
        if acquired:  # the promotion's own timeout (a socket's), not the wait for the slot
            raise
        raise LockUnavailable(f"Prefect concurrency limit {name!r} on {api_url} stayed taken for over {timeout_s:.0f} s "
                              f"(`prefect gcl inspect {name}` shows it)") from err


def ensure_limit(api_url: str, name: str) -> None:
    """Create the limit with 1 slot if missing; refuse one that would not exclude (limit ≠ 1, inactive, decaying)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                except ObjectAlreadyExists:
                    pass  # another promoter created it meanwhile
                limit = client.read_global_concurrency_limit_by_name(name)
    except Exception as err:  # connection refused, DNS, 5xx: the server named by PREFECT_API_URL is not usable
        raise RegistryLockUnusable(f"cannot read or create Prefect concurrency limit {name!r} on PREFECT_API_URL="
                                   f"{api_url!r} (the registry lock with an HTTP tracking URI): {type(err).__name__}: "
                                   f"{err}") from err
    if limit.limit != 1 or not limit.active or limit.slot_decay_per_second:
        raise RegistryLockUnusable(
            f"Prefect concurrency limit {name!r} on {api_url} has limit {limit.limit}, active {limit.active}, "
            f"slot decay {limit.slot_decay_per_second}: as the registry lock it must be limit 1, active, no decay "
            f"(`prefect gcl update {name} --limit 1 --enable --slot-decay-per-second 0`, or delete it)")

"""The model holder: follows a registry alias without a restart and without failing in-flight requests.

A background thread asks `resolve()` every `poll_seconds` which version should serve (plus anything
else that invalidates the loaded state, e.g. the lake's batches). When the answer changes it loads
the new `ServedModel` off the request path and then swaps one reference. A request reads
`current()` once and keeps that immutable object to the end, so a swap never changes the model
under it. A failed load keeps the old model serving and is retried at the next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from models.serving.scoring import ServedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingKey:
    version: str  # the registered version the alias points at
    items: Hashable = ()  # fingerprint of the searchable items (their batches); a change rebuilds the index


class ModelHolder:
    def __init__(self, resolve: Callable[[], ServingKey | None], load: Callable[[ServingKey], ServedModel],
                 poll_seconds: float) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be positive, got {poll_seconds}")
        self._resolve, self._load, self.poll_seconds = resolve, load, poll_seconds
        self._served: ServedModel | None = None
        self._key: ServingKey | None = None
        self.alias_version: str | None = None  # what the alias said at the last poll
        self.last_error: str | None = None  # the last failed poll or load, cleared by a successful one
        self.last_checked: float | None = None
        self._refresh_lock = threading.Lock()  # one load at a time (the poller and an explicit refresh)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> ServedModel | None:
        """The model to use for one whole request (read once, then kept)."""
        return self._served

    def refresh(self) -> bool:
        """Poll once; load and swap in a new model when the key changed. Returns whether it swapped."""
        with self._refresh_lock:
            try:
                key = self._resolve()
                self.alias_version, self.last_checked = (key.version if key else None), time.time()
                if key is None or key == self._key:
                    self.last_error = None
                    return False
                served = self._load(key)
            except Exception as err:  # keep serving what we have; the next poll retries
                self.last_error = f"{type(err).__name__}: {err}"
                log.warning("model refresh failed, still serving %s: %s", self._key, self.last_error)
                return False
            self._served, self._key, self.last_error = served, key, None  # one reference assignment: atomic
            log.info("now serving %s version %s", served.name, served.version)
            return True

    def start(self) -> None:
        """Load synchronously once (the service is ready when this returns, if an alias is set), then poll."""
        self.refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="model-holder", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

"""Retries with backoff for transient I/O (tracking server, object store, database connection), via tenacity.

Only failures that a later attempt can cure are retried: a refused or reset connection, a
timeout, a server answering 5xx, a database that is briefly locked or unreachable. A validation
error, a bad parameter, a missing model version fail at once, however often they would be tried.
Every retry is logged with what failed and when the next attempt comes.

MLflow's HTTP client retries each request itself (`MLFLOW_HTTP_REQUEST_*`, set in
features/env.py); this layer sits around whole operations (register a version, move an alias, push
the lake) and only sees what is left once those per-request retries are spent.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from typing import Callable, Iterator, TypeVar

from tenacity import RetryCallState, retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

logger = logging.getLogger("flywheel.retry")

ATTEMPTS = 5  # first try and four retries
FIRST_WAIT_S, MAX_WAIT_S = 1.0, 15.0  # exponential backoff with jitter: about 1, 2, 4, 8 s (+ up to 1 s)

_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
                     errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN}
# What MLflow's client, requests/urllib3, SQLAlchemy and the DB drivers say when a connection failed;
# MLflow rewraps the underlying error into a plain MlflowException message ("API request to … failed
# with exception …"), sometimes without a cause.
_TRANSIENT_MESSAGE = re.compile(
    r"max retries exceeded|connection (?:refused|reset|aborted)|remote ?disconnected|timed? ?out|"
    r"failed with timeout exception|failed with error code 5\d\d|too many 5\d\d error responses|"
    r"temporarily unavailable|database is locked|server closed the connection|could not connect to server|"
    r"connection to server at .* failed|broken pipe|bad gateway|service unavailable|"
    r"connection broken|incompleteread",  # a server killed mid-response (urllib3 does not retry a POST's read)
    re.IGNORECASE)
_TRANSIENT_REST_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
_TRANSIENT_S3_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                       "Throttling", "ThrottlingException", "503", "500"}


def _chain(err: BaseException) -> Iterator[BaseException]:
    """The error and the ones it was raised from or during (MLflow rewraps without `from`), as a traceback
    shows them: `raise … from None` ends the chain."""
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)


def _is_transient_one(err: BaseException) -> bool:
    name = type(err).__name__
    module = type(err).__module__ or ""
    if isinstance(err, (ConnectionError, TimeoutError)):  # refused, reset, aborted, broken pipe; socket timeouts
        return True
    if isinstance(err, OSError) and err.errno in _TRANSIENT_ERRNOS:
        return True
    if module.startswith(("requests", "urllib3")):
        # ConnectionError, Timeout, ChunkedEncodingError, ProtocolError, NewConnectionError, MaxRetryError
        if name in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "ChunkedEncodingError",
                    "ProtocolError", "NewConnectionError", "MaxRetryError", "ReadTimeoutError", "ConnectTimeoutError"):
            return True
        if name == "HTTPError":
            response = getattr(err, "response", None)
            return response is not None and (response.status_code >= 500 or response.status_code == 429)
    if module.startswith("botocore"):
        if name in ("EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
                    "ConnectionError", "HTTPClientError"):
            return True
        if name == "ClientError":
            return str(getattr(err, "response", {}).get("Error", {}).get("Code")) in _TRANSIENT_S3_CODES
    if module.startswith(("psycopg", "sqlalchemy")) and name in ("OperationalError", "InterfaceError", "DisconnectionError"):
        return True
    if module.startswith("redis") and name in ("ConnectionError", "TimeoutError", "BusyLoadingError"):  # Feast online store
        return True
    if module.startswith("dvc"):
        # A failed upload (the remote unreachable) or the repo lock held by another process: a push
        # only copies what the remote lacks, so trying again is safe.
        return name in ("UploadError", "DownloadError", "LockError")
    if module.startswith("mlflow"):
        if name == "RestException":
            return getattr(err, "error_code", None) in _TRANSIENT_REST_CODES
        # A plain MlflowException defaults to INTERNAL_ERROR whatever went wrong: judge by its message.
        return bool(_TRANSIENT_MESSAGE.search(str(getattr(err, "message", err))))
    return False


def is_transient(err: BaseException) -> bool:
    """Whether a later attempt may succeed: this error, or one it was raised from, is a connection-level failure."""
    return any(_is_transient_one(link) for link in _chain(err))


def _log_retry(what: str, attempts: int) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        first_line = (str(err).splitlines() or [""])[0][:300] if err else ""
        logger.warning("%s failed on attempt %d/%d with a transient error (%s: %s); retrying in %.1f s",
                       what, state.attempt_number, attempts, type(err).__name__, first_line, wait)
    return before_sleep


T = TypeVar("T")
WAIT_SCALE_ENV = "FLYWHEEL_RETRY_WAIT_SCALE"  # multiplies every backoff wait (default 1); tests of unreachable
                                              # endpoints set it small so they do not sleep through the schedule


def _wait_scale() -> float:
    raw = os.environ.get(WAIT_SCALE_ENV, "1")
    try:
        scale = float(raw)
    except ValueError:
        scale = -1.0
    if not scale >= 0:
        raise ValueError(f"{WAIT_SCALE_ENV}={raw!r}: expected a number >= 0 (1: the normal backoff)")
    return scale


def _scaled(wait: Callable[[RetryCallState], float]) -> Callable[[RetryCallState], float]:
    """The backoff `wait`, times FLYWHEEL_RETRY_WAIT_SCALE read when the wait is taken."""
    return lambda state: wait(state) * _wait_scale()


def retry_transient(what: str, attempts: int = ATTEMPTS, first_wait_s: float = FIRST_WAIT_S,
                    max_wait_s: float = MAX_WAIT_S) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: call again with exponential backoff while the failure `is_transient`, at most `attempts`
    times in all; any other failure, or the last transient one, is raised as it was."""
    return retry(retry=retry_if_exception(is_transient), stop=stop_after_attempt(attempts),
                 wait=_scaled(wait_exponential_jitter(initial=first_wait_s, max=max_wait_s, jitter=1.0)),
                 before_sleep=_log_retry(what, attempts), reraise=True)


def call_with_retries(what: str, fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` under `retry_transient(what)`."""
    return retry_transient(what)(fn)(*args, **kwargs)

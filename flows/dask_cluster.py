"""The start-up check of the Dask cluster that FLYWHEEL_DASK_ADDRESS names.

With that variable set, a Prefect run sends ingest's and clean's chunks to the cluster (flows/lifecycle.py).
A scheduler that does not answer, or answers with no worker, would otherwise show only when the ingest stage
starts: after a connect timeout, or never, its chunks queued on a scheduler that has nobody to run them. The
flows and the CLI check first, before any stage runs, and stop naming what is missing.
"""

from __future__ import annotations

from flows.settings import Settings

# How long the check waits for the scheduler to answer, then again for a first worker to join it (a worker
# started together with the flow, as `docker compose up` may, connects within a few seconds).
CHECK_TIMEOUT_S = 15.0


class DaskClusterUnusable(ValueError):
    """FLYWHEEL_DASK_ADDRESS names no usable cluster: a configuration error."""


def check_dask_cluster(address: str, timeout_s: float | None = None) -> int:
    """The cluster's thread count once its scheduler answers at `address` and has a worker, each within
    `timeout_s` (default CHECK_TIMEOUT_S); DaskClusterUnusable otherwise."""
    from distributed import Client

    timeout_s = CHECK_TIMEOUT_S if timeout_s is None else timeout_s
    unset = "or unset FLYWHEEL_DASK_ADDRESS to decode on this machine's threads"
    try:
        client = Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        raise DaskClusterUnusable(
            f"no Dask scheduler answers at FLYWHEEL_DASK_ADDRESS={address!r} within {timeout_s:.0f} s"
            f" ({type(err).__name__}: {err}); start one (`dask scheduler`, or the compose stack's dask-scheduler), {unset}"
        ) from err
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout_s)
        except TimeoutError as err:
            raise DaskClusterUnusable(
                f"the Dask scheduler at FLYWHEEL_DASK_ADDRESS={address!r} has no worker after {timeout_s:.0f} s;"
                f" start workers (`dask worker {address} --nthreads 1`) that see the landing folder and FLYWHEEL_HOME"
                f" at the same paths as the flow, {unset}"
            ) from err
        return max(1, sum(client.nthreads().values()))


def check_cluster_of(settings: Settings) -> None:
    """The check, when these settings name a cluster; nothing otherwise."""
    if settings.dask_address is not None:
        check_dask_cluster(settings.dask_address)

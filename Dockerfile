# The flywheel image: the project installed as `make install` does, for the compose stack's
# Prefect worker (it runs the deployments of prefect.yaml from /app), the MLflow tracking
# server (the same pinned mlflow and Postgres driver as the clients) and the Evidently UI.
FROM python:3.11-slim-bookworm

# Telemetry off for every process in the image (STACK_NOTES; features/env.py has the full list).
ENV DO_NOT_TRACK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    GX_ANALYTICS_ENABLED=false \
    FEAST_USAGE=False \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# espeak-ng, festival and its voices, flite: the demo batches' speech (Makefile SYSTEM_PACKAGES).
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng festival flite festvox-kallpc16k festvox-kdlpc16k \
       festvox-suopuhe-lj festvox-suopuhe-mv festvox-czech-dita festvox-czech-machac festvox-czech-ph festvox-ca-ona-hts \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# torch first, exactly pinned and from the CPU index: PyPI's Linux wheel would pull the CUDA
# build (gigabytes), and no later dependency may replace it (pyproject.toml pins the same version).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY . /app
# Editable, as `make install`: prefect.yaml's deployments run flows/… from /app.
RUN pip install -e .

# State lives on volumes (FLYWHEEL_HOME, MLflow's user store), created here so that a new named
# volume starts owned by the unprivileged user the services run as.
RUN useradd --create-home --uid 1000 flywheel \
    && mkdir -p /data/flywheel /data/mlflow-auth \
    && chown -R flywheel /data /app
USER flywheel
ENV FLYWHEEL_HOME=/data/flywheel \
    FLYWHEEL_PARAMS=/app/params.yaml \
    PREFECT_HOME=/data/flywheel/prefect

CMD ["flywheel", "--help"]

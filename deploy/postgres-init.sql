-- One database per service of the compose stack, created on the first start of an empty
-- postgres-data volume (docker-entrypoint-initdb.d), owned by POSTGRES_USER.
CREATE DATABASE mlflow;   -- MLflow backend store; also the champion advisory lock (FLYWHEEL_REGISTRY_LOCK_URI)
CREATE DATABASE prefect;  -- Prefect server
CREATE DATABASE feast;    -- Feast SQL registry and Postgres offline store

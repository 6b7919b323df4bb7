-- One database per service of the compose stack.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE feast;

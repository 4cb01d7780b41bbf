#!/bin/bash
# PostgreSQL first start (docker-entrypoint-initdb.d): the databases besides Airflow's, each
# owned by a role of its own, so a container holds only the password of what it uses.
#   mlflow          (role mlflow)  MLflow's tracking store and model registry
#   mlflow_auth     (role mlflow)  MLflow basic-auth users and permissions
#   celery_results  (role celery)  Celery task results: the workers never see the Airflow DB
# Runs only on an empty data volume; for an existing one, run the same statements by hand.
set -euo pipefail
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in .env}"
: "${CELERY_DB_PASSWORD:?set CELERY_DB_PASSWORD in .env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set mlflow_pw="$MLFLOW_DB_PASSWORD" --set celery_pw="$CELERY_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE ROLE celery LOGIN PASSWORD :'celery_pw';
CREATE DATABASE celery_results OWNER celery;
SQL

#!/usr/bin/env bash
# Creates MLflow's auth database next to the tracking database (POSTGRES_DB), owned by the same user.
# Runs once, on an empty data directory, from /docker-entrypoint-initdb.d (official image contract).
set -euo pipefail
auth_db="${MLFLOW_AUTH_DB:-mlflow_auth}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set db="$auth_db" --set owner="$POSTGRES_USER" <<'SQL'
CREATE DATABASE :"db" OWNER :"owner";
SQL

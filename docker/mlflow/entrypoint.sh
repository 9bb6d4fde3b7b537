#!/usr/bin/env bash
# Entrypoint of the mlopskit MLflow image.
#
# Sub-commands:
#   serve (default)   render the basic-auth ini, then, in one Python process, create the admin user if
#                     missing and run `mlflow server --app-name mlopskit-basic-auth` (MLflow's basic-auth
#                     app behind a guard that answers unreadable Authorization headers 401, and its user
#                     lookups cached: mlopskit_mlflow_app.py); uvicorn replaces that process when MLflow's
#                     job runner is off
#   migrate           upgrade the tracking and auth database schemas (MLflow's two upgrade commands, in one
#                     Python process), then exit (the cluster's Job; `invoke up` runs it once before serve);
#                     safe to run again
#   render-auth-config  print the rendered basic-auth ini with the database URI masked
#   metrics DIR PORT  serve the Prometheus metrics the server's workers write to DIR on PORT, without a
#                     login (the cluster runs it as the MLflow pod's `metrics` container)
#   gc [OPTIONS]      `mlflow gc [OPTIONS]` (e.g. --older-than 30d) on the tracking database, deleting the
#                     artifacts of runs in the `deleted` stage from the artifact store directly
#   anything else     exec'd as given (e.g. `mlflow --version`, `bash`)
#
# Environment contract (mlopskit/credentials.py names the secret ones; the manifests and
# mlopskit/services.py set exactly these):
#   secret     MLFLOW_BACKEND_STORE_URI       postgresql+psycopg://user:pass@host:5432/mlflow
#              MLFLOW_AUTH_DATABASE_URI       postgresql+psycopg://user:pass@host:5432/mlflow_auth
#              MLFLOW_ADMIN_USER              admin user, created on first start
#              MLFLOW_ADMIN_PASSWORD          its password (used only while the auth DB has no admin)
#              MLFLOW_FLASK_SERVER_SECRET_KEY Flask session/CSRF signing key
#              AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   S3 key pair of the artifact store
#   plain      MLFLOW_S3_ENDPOINT_URL         http://s3:8333 (unset for AWS S3)
#              AWS_DEFAULT_REGION             [us-east-1]
#              MLFLOW_ARTIFACTS_DESTINATION   s3://<bucket>/ (proxied artifacts)
#              MLFLOW_AUTH_DEFAULT_PERMISSION [NO_PERMISSIONS]
#              MLFLOW_AUTH_CACHE_TTL_SECONDS  [30]
#              MLFLOW_ALLOWED_HOSTS           comma list of accepted Host headers [localhost:*,127.0.0.1:*]
#              MLFLOW_WORKERS                 server worker processes [2]
#              MLFLOW_AUTH_CONFIG_TEMPLATE    ini template (a ConfigMap in the cluster) [/etc/mlflow/basic_auth.ini.template]
#              MLFLOW_PORT                    [5000]
#              MLFLOW_EXPOSE_PROMETHEUS       a writable directory: serve exposes Prometheus metrics (MLflow's
#                                             --expose-prometheus), emptied at every start [unset: off]
set -euo pipefail

say() { printf 'mlflow-entrypoint: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

need() {
  local name
  for name in "$@"; do
    [ -n "${!name:-}" ] || die "$name is not set; it is part of the image's environment contract (see the top of this file)"
  done
}

: "${MLFLOW_AUTH_DEFAULT_PERMISSION:=NO_PERMISSIONS}"
: "${MLFLOW_AUTH_CACHE_TTL_SECONDS:=30}"
: "${MLFLOW_ALLOWED_HOSTS:=localhost:*,127.0.0.1:*}"
: "${MLFLOW_WORKERS:=2}"
: "${MLFLOW_PORT:=5000}"
# The image's app (docker/mlflow/app): the same in the local stack and the cluster, which both run `serve`.
MLFLOW_APP_NAME=mlopskit-basic-auth
: "${AWS_DEFAULT_REGION:=us-east-1}"
export MLFLOW_AUTH_DEFAULT_PERMISSION MLFLOW_AUTH_CACHE_TTL_SECONDS AWS_DEFAULT_REGION

render_auth_config() {
  # ${NAME} placeholders only; a missing variable is an error, never an empty value. Values are
  # escaped for configparser ('%' doubled), so any printable character survives.
  local template="${MLFLOW_AUTH_CONFIG_TEMPLATE:-/etc/mlflow/basic_auth.ini.template}"
  [ -r "$template" ] || die "auth config template $template is not readable (MLFLOW_AUTH_CONFIG_TEMPLATE)"
  python3 -m mlopskit_mlflow_app render-auth-config "$template" "$@"
}

migrate() {
  need MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI
  # `mlflow db upgrade` and `python -m mlflow.server.auth db upgrade --url`, in one Python process.
  exec python3 -m mlopskit_mlflow_app migrate "$MLFLOW_BACKEND_STORE_URI" "$MLFLOW_AUTH_DATABASE_URI"
}

serve() {
  need MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI MLFLOW_ADMIN_USER MLFLOW_ADMIN_PASSWORD \
    MLFLOW_FLASK_SERVER_SECRET_KEY MLFLOW_ARTIFACTS_DESTINATION
  # The rendered file holds the auth database password: private to this user, outside the image.
  local dir
  dir=$(mktemp -d)
  chmod 700 "$dir"
  (umask 077 && render_auth_config >"$dir/basic_auth.ini")
  export MLFLOW_AUTH_CONFIG_PATH="$dir/basic_auth.ini"
  # MLflow reads these only to create the admin user in an empty auth database.
  export MLFLOW_AUTH_ADMIN_USERNAME="$MLFLOW_ADMIN_USER" MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_ADMIN_PASSWORD"
  # `mlflow server` checks the auth database and the admin user itself only for the app name basic-auth;
  # `serve` does it first for ours (one clear error instead of workers that the server restarts forever),
  # empties the metrics directory, then runs `mlflow server` in the same process: MLflow is imported once.
  # MLFLOW_EXPOSE_PROMETHEUS is also the option's own variable in `mlflow server`.
  local metrics=()
  if [ -n "${MLFLOW_EXPOSE_PROMETHEUS:-}" ]; then
    metrics=(--expose-prometheus "$MLFLOW_EXPOSE_PROMETHEUS")
  fi
  say "checking the auth database and the admin user, then starting mlflow server ($MLFLOW_APP_NAME) on port $MLFLOW_PORT with $MLFLOW_WORKERS workers"
  exec python3 -m mlopskit_mlflow_app serve \
    --app-name "$MLFLOW_APP_NAME" \
    --host 0.0.0.0 \
    --port "$MLFLOW_PORT" \
    --workers "$MLFLOW_WORKERS" \
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --serve-artifacts \
    --allowed-hosts "$MLFLOW_ALLOWED_HOSTS" \
    "${metrics[@]}"
}

gc() {
  need MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION
  say "mlflow gc $*: runs in the deleted stage, with their artifacts in $MLFLOW_ARTIFACTS_DESTINATION"
  exec python3 -m mlopskit_mlflow_app gc "$@"
}

command="${1:-serve}"
case "$command" in
  serve) shift || true; serve "$@" ;;
  migrate) migrate ;;
  render-auth-config) render_auth_config --mask ;;
  metrics)
    [ "$#" -eq 3 ] || die "usage: metrics DIR PORT"
    exec python3 -m mlopskit_mlflow_app serve-metrics "$2" "$3" ;;
  gc) shift; gc "$@" ;;
  *) exec "$@" ;;
esac

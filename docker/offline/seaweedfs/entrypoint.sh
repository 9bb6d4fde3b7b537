#!/usr/bin/env bash
# SeaweedFS master + volume + filer + S3 gateway in one process, telemetry off.
# The S3 gateway's only identity comes from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY;
# S3_BUCKET (optional) is created on start. Data lives in /data.
set -euo pipefail

if [ "${1:-serve}" != "serve" ]; then
  exec "$@"
fi
for name in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
  if [ -z "${!name:-}" ]; then
    echo "seaweedfs-entrypoint: error: $name is not set; the S3 gateway refuses anonymous access" >&2
    exit 1
  fi
done

config_dir=$(mktemp -d)
# mlopskit generates keys from [A-Za-z0-9_-], which need no JSON escaping.
(umask 077 && cat >"$config_dir/s3.json") <<JSON
{"identities": [{"name": "admin",
  "credentials": [{"accessKey": "${AWS_ACCESS_KEY_ID}", "secretKey": "${AWS_SECRET_ACCESS_KEY}"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON

exec weed server -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 -master.telemetry=false \
  -master.volumeSizeLimitMB=256 -volume.max=0 \
  -s3 -s3.port=8333 -s3.config="$config_dir/s3.json"

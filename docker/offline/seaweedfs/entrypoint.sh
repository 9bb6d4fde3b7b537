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

# JSON strings: '\' and '"' escaped, so any printable character in a key survives.
json_string() { printf '%s' "$1" | sed 's/[\\"]/\\&/g'; }
access_key=$(json_string "$AWS_ACCESS_KEY_ID")
secret_key=$(json_string "$AWS_SECRET_ACCESS_KEY")
config_dir=$(mktemp -d)
(umask 077 && cat >"$config_dir/s3.json") <<JSON
{"identities": [{"name": "admin",
  "credentials": [{"accessKey": "${access_key}", "secretKey": "${secret_key}"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON

# -master.electionTimeout=1s: the one master elects itself at once on a restart with existing raft state;
# at the default (10 s, randomised up to 20 s) the S3 gateway answered 11-21 s after start instead of ~4 s
# (seaweedfs/seaweedfs#4307). One master has no peer to race, so a short election cannot split the vote.
exec weed server -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 -master.telemetry=false \
  -master.electionTimeout=1s -master.volumeSizeLimitMB=256 -volume.max=0 \
  -s3 -s3.port=8333 -s3.config="$config_dir/s3.json"

#!/usr/bin/env bash
# Make a Docker engine available, idempotently.
# - does nothing when `docker info` already answers;
# - otherwise installs the distribution's engine package (Debian/Ubuntu: docker.io, Fedora/RHEL: moby-engine),
#   starts the engine through systemd where systemd runs, or `dockerd` in the background where no init system
#   manages it, and waits until `docker info` answers.
# Environment: DOCKER_WAIT_SECONDS (default 60), DOCKERD_LOG (default /var/log/dockerd.log).
set -euo pipefail

wait_seconds="${DOCKER_WAIT_SECONDS:-60}"
log="${DOCKERD_LOG:-/var/log/dockerd.log}"

say() { printf 'ensure-docker: %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  say "Docker engine already reachable; nothing to do."
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { say "not root and no sudo: install and start Docker by hand"; exit 1; }
  sudo_cmd=(sudo)
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    say "installing docker.io with apt-get"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq docker.io >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    say "installing moby-engine with dnf"
    "${sudo_cmd[@]}" dnf install -y -q moby-engine
  else
    say "no apt-get or dnf: install a Docker engine by hand (https://docs.docker.com/engine/install/)"
    exit 1
  fi
fi

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  say "starting docker through systemd"
  "${sudo_cmd[@]}" systemctl start docker
else
  say "no init system manages docker here: starting dockerd in the background (log: $log)"
  "${sudo_cmd[@]}" sh -c "nohup dockerd >'$log' 2>&1 &"
fi

for _ in $(seq "$wait_seconds"); do
  if docker info >/dev/null 2>&1; then
    say "Docker engine is up."
    exit 0
  fi
  sleep 1
done
say "Docker engine did not answer within ${wait_seconds}s; last lines of $log:"
tail -n 20 "$log" >&2 || true
exit 1

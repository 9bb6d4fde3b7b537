#!/usr/bin/env bash
# Build a minimal Debian base image without any registry: debootstrap, trim, `docker import`.
# Usage: build.sh IMAGE_NAME [SUITE] [MIRROR]
# MIRROR defaults to the first Debian mirror named in this host's apt sources.
set -euo pipefail

image="${1:?usage: build.sh IMAGE_NAME [SUITE] [MIRROR]}"
suite="${2:-bookworm}"
mirror="${3:-}"

say() { printf 'offline-debian: %s\n' "$*" >&2; }

if [ -z "$mirror" ]; then
  mirror=$( { grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
    | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -n 1)
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

root=$(mktemp -d /tmp/offline-debian.XXXXXX)
trap 'rm -rf "$root"' EXIT
say "debootstrap $suite from $mirror"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >/dev/null

say "trimming apt lists, caches, docs and locales"
# Same trimming as the official slim images: no apt lists or caches, docs, man pages or locales.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
cat >"$root"/etc/dpkg/dpkg.cfg.d/docker-slim <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root"/etc/apt/apt.conf.d/90-docker-slim
# The mirror this host uses, so `apt-get` inside images reaches what the host reaches.
printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" >"$root"/etc/apt/sources.list
rm -f "$root"/etc/apt/sources.list.d/*

say "importing into Docker as $image"
tar -C "$root" -c . | docker import \
  --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
say "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"

#!/usr/bin/env bash
# `npm run test:system`: the Debian packages as a user meets them (test/system/, issue 5). Builds the apt
# repository, boots Debian 12 containers with systemd-nspawn inside a lab and installs with apt. Root only;
# the first run bootstraps a root file system and a build chroot into .cache/ (a few minutes, network).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "test:system: needs root (debootstrap, systemd-nspawn, namespaces)" >&2; exit 2; }
command -v systemd-nspawn >/dev/null ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container >/dev/null; }
bash scripts/setup.sh

# Containers of a run killed before its teardown: everything rooted in their overlays, then the overlays.
containers=/run/mnedc-containers
if [[ -d $containers ]]; then
  for proc in /proc/[0-9]*; do
    [[ $(readlink "$proc/root" 2>/dev/null) == "$containers"/* ]] && kill -KILL "${proc#/proc/}" 2>/dev/null || true
  done
  for merged in "$containers"/*/merged; do umount --lazy "$merged" 2>/dev/null || true; done
  rm -rf "$containers"
fi

exec node --test --test-reporter=spec test/dist/system/*.test.js

#!/usr/bin/env bash
# What the system test's containers are made of, cached in .cache/ (git-ignored):
#   .cache/rootfs-bookworm   a minimal bootable Debian 12 (systemd, apt) — the read-only lower layer
#   .cache/debian-runtime    a local apt repository of the Debian packages the mnedc .debs pull in
#                            (nodejs, libnode and their libraries) and iperf3, from the Debian mirror
# The lab's namespaces have no internet, so containers install from file: repositories only: this one and
# dist/apt (npm run deb), which must exist first. The runtime set is recomputed when the .debs' dependencies
# change. Needs root (debootstrap, chroot, mount).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROOTFS=$ROOT/.cache/rootfs-bookworm
RUNTIME=$ROOT/.cache/debian-runtime
MIRROR=${MNEDC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
REPO=$ROOT/dist/apt

[[ $(id -u) -eq 0 ]] || { echo "system-rootfs: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
[[ -f $REPO/Packages ]] || { echo "system-rootfs: no $REPO/Packages; run npm run deb first" >&2; exit 2; }
command -v debootstrap >/dev/null && command -v dpkg-scanpackages >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap dpkg-dev >/dev/null

if [[ ! -x $ROOTFS/lib/systemd/systemd ]]; then
  echo "system-rootfs: bootstrapping a Debian 12 root file system (once; cached in .cache/)" >&2
  # Built aside and moved in place, so an interrupted bootstrap never passes for a finished one.
  rm -rf "$ROOTFS.new" "$ROOTFS"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2,iputils-ping,ca-certificates \
    bookworm "$ROOTFS.new" "$MIRROR" >/dev/null
  # Each container gets its own machine ID; an empty file here would make systemd invent one per boot.
  rm -f "$ROOTFS.new/etc/machine-id" "$ROOTFS.new/var/lib/dbus/machine-id"
  chroot "$ROOTFS.new" apt-get clean
  mv "$ROOTFS.new" "$ROOTFS"
fi

# Beside what the mnedc packages need: iperf3, for a bulk transfer through the installed daemons;
# systemd-resolved, libnss-resolve and polkitd, which mnedcd-client suggests, for names via the relay's DNS;
# etcd-server (which mnedcd-server suggests) and etcd-client for a cluster of relays, openssh-server
# for an ssh session across one (test/system/cluster.test.ts) and over the overlay's IPv6, and avahi-daemon
# and avahi-utils for service discovery across the NATs (test/system/apt-install.test.ts).
EXTRA=(iperf3 systemd-resolved libnss-resolve polkitd etcd-server etcd-client openssh-server avahi-daemon avahi-utils)
# The dependencies of the mnedc packages, as the Packages index states them, decide the runtime set.
stamp=$( { grep -E '^(Package|Depends):' "$REPO/Packages" | sort -u; echo "${EXTRA[*]}"; } | sha256sum | cut -d' ' -f1)
if [[ ! -f $RUNTIME/Packages || $(cat "$RUNTIME/.stamp" 2>/dev/null) != "$stamp" ]]; then
  echo "system-rootfs: downloading the Debian packages the mnedc .debs depend on" >&2
  work=$(mktemp -d /run/mnedc-runtime.XXXXXX)
  cleanup() {
    umount "$work/merged/srv/mnedc-apt" "$work/merged/srv/out" "$work/merged" 2>/dev/null || true
    rm -rf "$work"
  }
  trap cleanup EXIT
  rm -rf "$RUNTIME.new"
  mkdir -p "$work"/{upper,work,merged} "$RUNTIME.new"
  mount -t overlay overlay -o "lowerdir=$ROOTFS,upperdir=$work/upper,workdir=$work/work" "$work/merged"
  mkdir -p "$work/merged/srv/mnedc-apt" "$work/merged/srv/out"
  mount --bind "$REPO" "$work/merged/srv/mnedc-apt"
  mount --bind "$RUNTIME.new" "$work/merged/srv/out"
  cp /etc/resolv.conf "$work/merged/etc/resolv.conf"
  echo 'deb [trusted=yes] file:/srv/mnedc-apt ./' > "$work/merged/etc/apt/sources.list.d/mnedc.list"
  # What a container lacks to install every mnedc package, exactly as its apt would resolve it.
  chroot "$work/merged" sh -c "apt-get update -qq && apt-get install -y -qq --download-only \
    -o Dir::Cache::Archives=/srv/out mnedcd-server mnedcd-client mnedcctl ${EXTRA[*]} >/dev/null"
  rm -rf "$RUNTIME.new/partial" "$RUNTIME.new"/mnedc*.deb "$RUNTIME.new/lock"
  ( cd "$RUNTIME.new" && dpkg-scanpackages . /dev/null > Packages 2>/dev/null )
  echo "$stamp" > "$RUNTIME.new/.stamp"
  cleanup
  trap - EXIT
  rm -rf "$RUNTIME" && mv "$RUNTIME.new" "$RUNTIME"
  echo "system-rootfs: $(ls "$RUNTIME"/*.deb | wc -l) Debian packages in ${RUNTIME#$ROOT/}" >&2
fi

#!/usr/bin/env bash
# Everything a fresh clone needs before `npm test`, `npm run demo` or `npm run bench`: Debian packages for
# the lab (as root), node modules from the lock file, the native TUN addon and the TypeScript build.
# Idempotent and quiet when there is nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in ip:iproute2 nft:nftables iperf3:iperf3 ping:iputils-ping tcpdump:tcpdump pkill:procps g++:g++ make:make python3:python3 openssl:openssl dig:dnsutils; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
# The bench's OpenVPN; it lives in /usr/sbin, which a non-login root shell may not have on PATH.
command -v openvpn >/dev/null 2>&1 || [[ -x /usr/sbin/openvpn ]] || need_apt+=(openvpn)
# sd-notify compiles against libsystemd when npm installs it.
[[ -f /usr/include/systemd/sd-daemon.h ]] || need_apt+=(libsystemd-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing ${need_apt[*]}; run as root (sudo) to install them" >&2
  else
    echo "setup: installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  fi
fi

# Single files of Debian packages, without installing them (which would start their services): the .debs
# of the packages named after DIR are downloaded into DIR, for dpkg-deb to take files out.
download_debs() {
  local dir=$1
  shift
  chmod 755 "$dir"  # apt's _apt user downloads into it
  (cd "$dir" && { apt-get download -qq "$@" 2>/dev/null || { apt-get update -qq && apt-get download -qq "$@"; }; }) >/dev/null
}

# promtool checks the Prometheus metrics in the tests. Only that binary is taken from Debian's prometheus
# package: installing the package would add a system user and start a Prometheus server on port 9090.
if ! command -v promtool >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing promtool; run as root (sudo) to install it from Debian's prometheus package" >&2
  else
    echo "setup: installing promtool (from the prometheus package, without the server)" >&2
    deb_dir=$(mktemp -d)
    download_debs "$deb_dir" prometheus
    dpkg-deb --fsys-tarfile "$deb_dir"/prometheus_*.deb | tar -x -C "$deb_dir" ./usr/bin/promtool
    install -m 755 "$deb_dir/usr/bin/promtool" /usr/local/bin/promtool
    rm -rf "$deb_dir"
  fi
fi

# etcd for the cluster tests (tests start their own members on loopback with temporary data directories):
# Debian's etcd and etcdctl binaries, taken from the etcd-server and etcd-client packages without installing
# them, which would add a system user and start an etcd on port 2379.
if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing etcd; run as root (sudo) to install it from Debian's etcd-server and etcd-client packages" >&2
  else
    echo "setup: installing etcd and etcdctl (from etcd-server and etcd-client, without the service)" >&2
    deb_dir=$(mktemp -d)
    download_debs "$deb_dir" etcd-server etcd-client
    dpkg-deb --fsys-tarfile "$deb_dir"/etcd-server_*.deb | tar -x -C "$deb_dir" ./usr/bin/etcd
    dpkg-deb --fsys-tarfile "$deb_dir"/etcd-client_*.deb | tar -x -C "$deb_dir" ./usr/bin/etcdctl
    install -m 755 "$deb_dir/usr/bin/etcd" "$deb_dir/usr/bin/etcdctl" /usr/local/bin/
    rm -rf "$deb_dir"
  fi
fi

# sshd for the lab's ssh sessions (packages/lab/src/sshd.ts runs it only inside namespaces a test made, with
# throwaway keys and config): Debian's /usr/sbin/sshd, taken from openssh-server without installing it, which
# would add the sshd user and host keys and start an ssh service on port 22 of the host. It goes to a private
# directory off PATH, /usr/local/lib/mnedc-lab, so nothing takes it for an installed sshd. A library it needs
# that this machine lacks (libwrap.so.0 of libwrap0) is taken from its package the same way into
# /usr/local/lib/mnedc-lab/lib, which sshd.ts puts on LD_LIBRARY_PATH.
lab_private=/usr/local/lib/mnedc-lab
sshd_missing_libs() { LD_LIBRARY_PATH=$lab_private/lib ldd "$1" 2>/dev/null | awk '/not found/ { print $1 }'; }
if [[ ! -x $lab_private/sshd || -n $(sshd_missing_libs "$lab_private/sshd") ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing $lab_private/sshd; run as root (sudo) to extract it from Debian's openssh-server package" >&2
  else
    echo "setup: installing $lab_private/sshd (from openssh-server, without the service)" >&2
    deb_dir=$(mktemp -d)
    download_debs "$deb_dir" openssh-server libwrap0
    dpkg-deb --fsys-tarfile "$deb_dir"/openssh-server_*.deb | tar -x -C "$deb_dir" ./usr/sbin/sshd
    install -d -m 755 "$lab_private"
    sshd_missing=$(sshd_missing_libs "$deb_dir/usr/sbin/sshd" | tr '\n' ' ' || true)
    if [[ " $sshd_missing" == *" libwrap.so.0 "* ]]; then
      dpkg-deb --fsys-tarfile "$deb_dir"/libwrap0_*.deb | tar -x -C "$deb_dir" --wildcards './usr/lib/*/libwrap.so.0*'
      install -d -m 755 "$lab_private/lib"
      cp -L "$deb_dir"/usr/lib/*/libwrap.so.0 "$lab_private/lib/libwrap.so.0"
      chmod 644 "$lab_private/lib/libwrap.so.0"
      sshd_missing=$(sshd_missing_libs "$deb_dir/usr/sbin/sshd" | tr '\n' ' ' || true)
    fi
    if [[ -n $sshd_missing ]]; then
      echo "setup: warning: sshd needs libraries this machine lacks (${sshd_missing% }); the ssh lab tests will skip" >&2
    else
      install -m 755 "$deb_dir/usr/sbin/sshd" "$lab_private/sshd"
    fi
    rm -rf "$deb_dir"
  fi
fi

# avahi-daemon and avahi-utils for the mDNS tests, which start their own daemons, each with a private D-Bus
# bus, inside namespaces they create (packages/lab/src/avahi.ts). The host itself must never run one on its
# own network: a temporary policy-rc.d (exit 101, any existing one is put back afterwards) keeps the
# maintainer scripts from starting the service, and where systemd runs, its units are masked before the
# install (so neither the postinst nor socket or D-Bus activation can start it, not even if the install is
# interrupted) and again after it. Without systemd nothing else starts it: Debian's D-Bus activation file
# runs /bin/false. --no-install-recommends leaves out libnss-mdns, which would change the host's name lookups.
avahi_ok() {
  { command -v avahi-daemon || [[ -x /usr/sbin/avahi-daemon ]]; } >/dev/null 2>&1 &&
    command -v avahi-browse >/dev/null 2>&1 && command -v avahi-publish >/dev/null 2>&1
}
mask_avahi() {
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    systemctl mask --now avahi-daemon.service avahi-daemon.socket >/dev/null 2>&1 || true
  fi
}
if ! avahi_ok; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing avahi-daemon/avahi-utils; run as root (sudo) to install them" >&2
  else
    echo "setup: installing avahi-daemon and avahi-utils (without starting an avahi-daemon on the host)" >&2
    mask_avahi
    (
      policy=/usr/sbin/policy-rc.d
      backup=
      if [[ -e $policy || -L $policy ]]; then
        backup=$(mktemp /usr/sbin/policy-rc.d.mnedc-backup.XXXXXX)
        mv -f "$policy" "$backup"
      fi
      restore() {
        rm -f "$policy"
        if [[ -n $backup ]]; then mv -f "$backup" "$policy"; fi
      }
      trap restore EXIT
      trap 'exit 130' INT TERM HUP
      printf '#!/bin/sh\n# Written by mnedc scripts/setup.sh while it installs avahi: start no services.\nexit 101\n' >"$policy"
      chmod 755 "$policy"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends avahi-daemon avahi-utils >/dev/null
    )
    mask_avahi
  fi
fi

# npm ci only when the lock file is newer than the installed tree, so repeated runs are fast.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

npm run --silent build

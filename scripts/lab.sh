#!/usr/bin/env bash
# mnedc network lab: reproduces the nested-NAT reachability problem on one
# machine with Linux network namespaces (root required).
#
# Topology (namespace names are PREFIX + node; every LAN is a bridge `lan`
# inside its router's namespace; hosts use `eth0`, routers' uplink is `wan`):
#
#   r0  main router, bridge lan 192.168.0.1/24 (main LAN, no WAN, no NAT)
#   ├── srv  192.168.0.10   relay server host
#   ├── a    192.168.0.20   device on the main LAN
#   ├── r1   wan 192.168.0.2, lan 192.168.1.1/24, NAT
#   │   ├── b    192.168.1.10
#   │   └── r2   wan 192.168.1.2, lan 192.168.2.1/24, NAT
#   │       └── c    192.168.2.10   (two NATs deep)
#   └── r3   wan 192.168.0.3, lan 192.168.1.1/24 (REUSES r1's subnet), NAT
#       └── d    192.168.1.10   (same private IP as b)
#
# Routers r1..r3 behave like home routers (nftables in their namespace):
# masquerade out of `wan`, forward policy drop, accept established/related,
# accept lan -> wan, nothing new from wan to lan.
#
# Nothing is ever created in the root network namespace: veth pairs are
# created directly inside the target namespaces, forwarding is only enabled
# inside router namespaces.
#
# PREFIX scheme: PREFIX must match ^mn[a-z0-9-]{0,6}$ (start with "mn", at
# most 8 characters, e.g. "mn3fa2-"). A lab is the set of namespaces
# PREFIX+NODE for NODE in r0 srv a r1 b r2 c r3 d; `list` and `down-all`
# recognise labs by that pattern (no node name is a suffix of another, so
# every namespace name maps to exactly one prefix). `down PREFIX` only
# touches PREFIX+NODE names, never other labs that merely share a prefix.
#
# Usage:
#   lab.sh up PREFIX                 build the lab (exit 3 if PREFIX is in use)
#   lab.sh check PREFIX              assert the problem statement (exit 1 on violation)
#   lab.sh down PREFIX               tear down (idempotent)
#   lab.sh exec PREFIX NODE cmd...   run cmd inside PREFIX+NODE
#   lab.sh list                      list lab prefixes present
#   lab.sh down-all                  tear down every lab present
set -euo pipefail

NODES=(r0 srv a r1 b r2 c r3 d)
ROUTERS=(r0 r1 r2 r3)
NODE_RE='r0|srv|a|r1|b|r2|c|r3|d'
PREFIX_RE='^mn[a-z0-9-]{0,6}$'

PROG=${0##*/}

usage() {
  cat >&2 <<EOF
usage: $PROG up PREFIX
       $PROG check PREFIX
       $PROG down PREFIX
       $PROG exec PREFIX NODE cmd [args...]
       $PROG list
       $PROG down-all
PREFIX: starts with "mn", at most 8 chars of [a-z0-9-] (e.g. mn3fa2-)
NODE:   ${NODE_RE//|/ }
EOF
  exit 2
}

die() { echo "$PROG: $*" >&2; exit 1; }

valid_prefix() { [[ ${1-} =~ $PREFIX_RE ]]; }
valid_node() { [[ ${1-} =~ ^($NODE_RE)$ ]]; }

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
  local t
  for t in ip nft ping sysctl; do
    command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
  done
}

# Names of all network namespaces (first field of `ip netns list`).
all_ns() { ip netns list 2>/dev/null | awk '{print $1}'; }

ns_exists() { [[ -e /var/run/netns/$1 ]] || all_ns | grep -qxF -- "$1"; }

# Namespaces of lab PREFIX that currently exist.
lab_ns() {
  local p=$1 n
  for n in "${NODES[@]}"; do
    if ns_exists "$p$n"; then echo "$p$n"; fi
  done
}

# ---------------------------------------------------------------- down --
down_lab() {
  local p=$1 ns pids i
  local present
  present=$(lab_ns "$p")
  [[ -n $present ]] || return 0
  for ns in $present; do
    # Kill every process living in the namespace, wait (bounded) until gone.
    for i in 1 2 3 4 5 6 7 8 9 10; do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [[ -n $pids ]] || break
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
      sleep 0.1
    done
    ip netns del "$ns" 2>/dev/null || true
  done
  # Bounded wait until no namespace of this lab is listed anymore.
  for i in $(seq 1 50); do
    present=$(lab_ns "$p")
    [[ -n $present ]] || return 0
    for ns in $present; do ip netns del "$ns" 2>/dev/null || true; done
    sleep 0.1
  done
  echo "$PROG: warning: namespaces still present after down: $present" >&2
  return 0
}

list_labs() {
  local ns
  all_ns | while read -r ns; do
    if [[ $ns =~ ^(mn[a-z0-9-]{0,6})($NODE_RE)$ ]]; then
      echo "${BASH_REMATCH[1]}"
    fi
  done | sort -u
}

# ------------------------------------------------------------------ up --
P=""
BUILDING=0

on_exit_up() {
  local rc=$?
  if [[ $BUILDING -eq 1 ]]; then
    echo "$PROG: up $P failed (exit $rc), tearing down what was built" >&2
    BUILDING=0
    down_lab "$P" || true
    [[ $rc -ne 0 ]] || rc=1
  fi
  exit "$rc"
}

nsx() { local n=$1; shift; ip netns exec "$P$n" "$@"; }

# veth CHILD IFNAME PARENT: CHILD's IFNAME <-> PARENT's v-CHILD (in bridge lan)
veth() {
  local child=$1 ifname=$2 parent=$3
  ip link add "$ifname" netns "$P$child" type veth peer name "v-$child" netns "$P$parent"
  ip -n "$P$parent" link set "v-$child" master lan up
  ip -n "$P$child" link set "$ifname" up
}

router_nft() {
  # Home-router firewall + NAT. The LAN is a bridge, so routed packets from
  # the LAN arrive with iifname "lan" (the bridge device, not the veth port).
  nsx "$1" nft -f - <<'EOF'
flush ruleset
table ip mnlab {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state invalid drop
    iifname "lan" oifname "wan" accept
    # bridged LAN<->LAN traffic only shows up here if br_netfilter is active
    # (we switch it off, this is a safety net)
    iifname "lan" oifname "lan" accept
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade
  }
}
EOF
}

up_lab() {
  P=$1
  need_root
  local n present
  present=$(lab_ns "$P")
  if [[ -n $present ]]; then
    echo "$PROG: prefix $P already in use (namespaces: $(echo $present))" >&2
    exit 3
  fi
  BUILDING=1
  trap on_exit_up EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  for n in "${NODES[@]}"; do
    ip netns add "$P$n"
  done

  for n in "${NODES[@]}"; do
    local fwd=0 s
    case $n in r*) fwd=1 ;; esac
    s=(net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
       net.ipv4.ip_forward=$fwd)
    # br_netfilter (built in here) defaults to 1 in new namespaces: bridged
    # frames would traverse the ip forward hook (policy drop) and conntrack.
    if [[ $fwd -eq 1 ]] && nsx "$n" test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
      s+=(net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-arptables=0)
    fi
    nsx "$n" sysctl -q -w "${s[@]}" >/dev/null
    ip -n "$P$n" link set lo up
  done

  # LAN bridges (STP off, no forward delay).
  ip -n "${P}r0" link add lan type bridge stp_state 0 forward_delay 0
  ip -n "${P}r1" link add lan type bridge stp_state 0 forward_delay 0
  ip -n "${P}r2" link add lan type bridge stp_state 0 forward_delay 0
  ip -n "${P}r3" link add lan type bridge stp_state 0 forward_delay 0
  for n in "${ROUTERS[@]}"; do ip -n "$P$n" link set lan up; done
  ip -n "${P}r0" addr add 192.168.0.1/24 dev lan
  ip -n "${P}r1" addr add 192.168.1.1/24 dev lan
  ip -n "${P}r2" addr add 192.168.2.1/24 dev lan
  ip -n "${P}r3" addr add 192.168.1.1/24 dev lan

  # Links: main LAN.
  veth srv eth0 r0
  veth a eth0 r0
  veth r1 wan r0
  veth r3 wan r0
  # r1's LAN.
  veth b eth0 r1
  veth r2 wan r1
  # r2's LAN.
  veth c eth0 r2
  # r3's LAN.
  veth d eth0 r3

  ip -n "${P}srv" addr add 192.168.0.10/24 dev eth0
  ip -n "${P}srv" route add default via 192.168.0.1
  ip -n "${P}a" addr add 192.168.0.20/24 dev eth0
  ip -n "${P}a" route add default via 192.168.0.1
  ip -n "${P}r1" addr add 192.168.0.2/24 dev wan
  ip -n "${P}r1" route add default via 192.168.0.1
  ip -n "${P}b" addr add 192.168.1.10/24 dev eth0
  ip -n "${P}b" route add default via 192.168.1.1
  ip -n "${P}r2" addr add 192.168.1.2/24 dev wan
  ip -n "${P}r2" route add default via 192.168.1.1
  ip -n "${P}c" addr add 192.168.2.10/24 dev eth0
  ip -n "${P}c" route add default via 192.168.2.1
  ip -n "${P}r3" addr add 192.168.0.3/24 dev wan
  ip -n "${P}r3" route add default via 192.168.0.1
  ip -n "${P}d" addr add 192.168.1.10/24 dev eth0
  ip -n "${P}d" route add default via 192.168.1.1

  router_nft r1
  router_nft r2
  router_nft r3

  BUILDING=0
  trap - EXIT INT TERM
  echo "lab $P up (${NODES[*]/#/$P})"
}

# ---------------------------------------------------------------- check --
# The problem-statement assertions (`check`), kept in their own file.
# shellcheck source=lab-check.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab-check.sh"

# ---------------------------------------------------------------- main --
cmd=${1-}
case $cmd in
  up)
    [[ $# -ge 2 ]] || { echo "$PROG: up: PREFIX is missing" >&2; usage; }
    [[ $# -eq 2 ]] || usage
    valid_prefix "$2" || { echo "$PROG: bad PREFIX '${2}': must match $PREFIX_RE (start with mn, <= 8 chars)" >&2; usage; }
    up_lab "$2"
    ;;
  check)
    [[ $# -eq 2 ]] && valid_prefix "$2" || usage
    check_lab "$2"
    ;;
  down)
    [[ $# -eq 2 ]] && valid_prefix "$2" || usage
    need_root
    down_lab "$2"
    ;;
  exec)
    [[ $# -ge 4 ]] && valid_prefix "$2" && valid_node "$3" || usage
    P=$2; n=$3; shift 3
    exec ip netns exec "$P$n" "$@"
    ;;
  list)
    [[ $# -eq 1 ]] || usage
    list_labs
    ;;
  down-all)
    [[ $# -eq 1 ]] || usage
    need_root
    for p in $(list_labs); do down_lab "$p"; done
    ;;
  *)
    usage
    ;;
esac

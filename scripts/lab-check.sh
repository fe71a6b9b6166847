# Sourced by lab.sh: `lab.sh check PREFIX` asserts the problem statement in lab PREFIX
# (lower -> upper reachable; upper -> lower and sibling -> sibling not). Uses lab.sh's helpers.

NPASS=0
NFAIL=0

result() { # ok|fail ID DESCRIPTION [detail]
  if [[ $1 == ok ]]; then
    NPASS=$((NPASS + 1)); printf 'OK   %-22s %s\n' "$2" "$3"
  else
    NFAIL=$((NFAIL + 1)); printf 'FAIL %-22s %s%s\n' "$2" "$3" "${4:+ ($4)}"
  fi
}

ping1() { ip netns exec "$P$1" ping -n -q -c1 -W1 "$2" >/dev/null 2>&1; }

expect_reach() { # ID NODE DST DESC  (up to 3 attempts)
  local i
  for i in 1 2 3; do
    if ping1 "$2" "$3"; then result ok "$1" "$4"; return 0; fi
  done
  result fail "$1" "$4" "no reply after 3 pings"
}

expect_blocked() { # ID NODE DST DESC  (one ping; a reply is a violation)
  # One probe is enough: retries only help the positive checks (first-packet
  # ARP/conntrack setup); a path that is open answers the first ping too.
  if ping1 "$2" "$3"; then result fail "$1" "$4" "got a reply"; else result ok "$1" "$4"; fi
}

icmp_in_echos() { # NODE -> IcmpInEchos counter of that namespace
  ip netns exec "$P$1" awk '/^Icmp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "InEchos") c = i; h = 1 } else print $c }' /proc/net/snmp
}

has_addr() { # NODE IFACE ADDR
  ip -n "$P$1" -4 -o addr show dev "$2" 2>/dev/null | grep -q " $3/"
}

SRV_ROUTES=()
cleanup_check() {
  local r
  for r in "${SRV_ROUTES[@]}"; do
    ip -n "${P}srv" route del "$r" via 192.168.0.2 2>/dev/null || true
  done
  SRV_ROUTES=()
}

check_lab() {
  P=$1
  need_root
  local n missing=""
  for n in "${NODES[@]}"; do ns_exists "$P$n" || missing+=" $P$n"; done
  [[ -z $missing ]] || die "lab $P is not up (missing:$missing)"
  trap cleanup_check EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  # Topology sanity.
  if has_addr b eth0 192.168.1.10 && has_addr d eth0 192.168.1.10; then
    result ok same-ip:b,d "b and d both have 192.168.1.10"
  else
    result fail same-ip:b,d "b and d both have 192.168.1.10"
  fi
  if has_addr r1 lan 192.168.1.1 && has_addr r3 lan 192.168.1.1; then
    result ok same-lan:r1,r3 "r1 and r3 LANs both use 192.168.1.0/24"
  else
    result fail same-lan:r1,r3 "r1 and r3 LANs both use 192.168.1.0/24"
  fi

  # Lower -> upper: reachable (through one or two NATs).
  expect_reach up:a-\>srv   a  192.168.0.10 "a -> srv 192.168.0.10 (same LAN)"
  expect_reach up:b-\>srv   b  192.168.0.10 "b -> srv 192.168.0.10 (via r1 NAT)"
  expect_reach up:b-\>a     b  192.168.0.20 "b -> a 192.168.0.20 (via r1 NAT)"
  expect_reach up:c-\>srv   c  192.168.0.10 "c -> srv 192.168.0.10 (via r2+r1 NAT)"
  expect_reach up:c-\>r1lan c  192.168.1.1  "c -> r1 LAN 192.168.1.1 (via r2 NAT)"
  expect_reach up:d-\>srv   d  192.168.0.10 "d -> srv 192.168.0.10 (via r3 NAT)"
  expect_reach up:d-\>a     d  192.168.0.20 "d -> a 192.168.0.20 (via r3 NAT)"

  # c -> 192.168.1.10 reaches b, never d: c's packets leave r2 onto r1's
  # LAN, where 192.168.1.10 is b; d's 192.168.1.10 lives behind r3, a
  # different NAT that c's traffic never crosses. The address alone cannot
  # name d from anywhere outside r3's LAN (it is ambiguous), so a relay is
  # needed. Prove it with the ICMP InEchos counters of b and d.
  local b0 d0 b1 d1
  b0=$(icmp_in_echos b); d0=$(icmp_in_echos d)
  expect_reach up:c-\>b     c  192.168.1.10 "c -> 192.168.1.10 (r1 LAN, via r2 NAT)"
  b1=$(icmp_in_echos b); d1=$(icmp_in_echos d)
  if [[ $b1 -gt $b0 && $d1 -eq $d0 ]]; then
    result ok sib:c-\>d-ambiguous "c -> 192.168.1.10 reaches b (b echo $b0->$b1), not d (d echo $d0->$d1)"
  else
    result fail sib:c-\>d-ambiguous "c -> 192.168.1.10 reaches b, not d" "b echo $b0->$b1, d echo $d0->$d1"
  fi

  # Upper -> lower: NOT reachable.
  expect_blocked down:srv-\>b  srv 192.168.1.10 "srv -/-> 192.168.1.10 (no route)"
  expect_blocked down:a-\>c    a   192.168.2.10 "a -/-> c 192.168.2.10 (no route)"
  expect_blocked down:b-\>c    b   192.168.2.10 "b -/-> c 192.168.2.10 (behind r2)"
  expect_blocked down:srv-\>r2wan srv 192.168.1.2 "srv -/-> r2 WAN 192.168.1.2 (no route)"
  # Same with explicit routes via r1's WAN: now the packets reach r1 and it
  # is r1's firewall (nothing new from wan to lan) that drops them.
  ip -n "${P}srv" route add 192.168.1.0/24 via 192.168.0.2
  SRV_ROUTES+=(192.168.1.0/24)
  ip -n "${P}srv" route add 192.168.2.0/24 via 192.168.0.2
  SRV_ROUTES+=(192.168.2.0/24)
  expect_reach  route:srv-\>r1lan srv 192.168.1.1  "srv -> r1 LAN addr 192.168.1.1 (route via r1 WAN works)"
  expect_blocked down:srv-\>b-route srv 192.168.1.10 "srv -/-> b 192.168.1.10 even with route via 192.168.0.2 (r1 firewall)"
  expect_blocked down:srv-\>c-route srv 192.168.2.10 "srv -/-> c 192.168.2.10 even with route via 192.168.0.2 (r1 firewall)"
  cleanup_check

  # Sibling -> sibling: NOT reachable.
  # (b -> d is not even expressible: 192.168.1.10 is b's own address, and
  # c -> 192.168.1.10 lands on b, see sib:c->d-ambiguous above.)
  expect_blocked sib:d-\>c     d 192.168.2.10 "d -/-> c 192.168.2.10 (sibling subtree)"
  expect_blocked sib:d-\>r2lan d 192.168.2.1  "d -/-> r2 LAN 192.168.2.1 (sibling subtree)"

  trap - EXIT INT TERM
  echo "lab check $P: $NPASS passed, $NFAIL failed"
  [[ $NFAIL -eq 0 ]]
}

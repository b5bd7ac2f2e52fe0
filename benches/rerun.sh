#!/usr/bin/env bash
# Rerun cost against first-apply cost (issue 11 item 6: a rerun with nothing to change costs
# O(rules)). For N and 2N inbound ports, per backend (iptables-legacy, iptables-nft, native
# nftables): the median of RUNS first applies (each in a fresh namespace) and of RUNS identical
# reruns, side by side in one run. Targets: rerun <= 3x the first apply at N, and the rerun at 2N
# at most ~2x the rerun at N (checked as <= 2.5x, for noise). Throwaway namespaces
# bench-rerun-<pid>, deleted on exit. Needs root, iproute2, iptables, nft. Exits 1 on a miss.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 2; }
cargo build --release --quiet
bin=$PWD/target/release/istio-iptables
ports=${PORTS:-4000}
runs=${RUNS:-5}
ns=bench-rerun-$$
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT

fresh() { ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; ip -n "$ns" addr add 240.240.240.240/32 dev lo; }
# Milliseconds one run of the tool takes, started as a test would (`ip netns exec`).
timed() {
  local start end
  start=$(date +%s%N)
  ENABLE_INBOUND_IPV6=false ip netns exec "$ns" "$bin" "$@" >/dev/null 2>&1 || { echo "run failed: $*" >&2; exit 1; }
  end=$(date +%s%N)
  echo $(( (end - start) / 1000 ))
}
median() { sort -n | awk '{a[NR]=$1} END {m=a[int((NR+1)/2)]; printf "%.1f", m/1000}'; }

measure() { # backend-flag count -> "first rerun" medians in ms
  local count=$1; shift
  local list argv
  list=$(seq -s, 10001 $((10000 + count)))
  argv=(-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b "$list" -d 15090,15021,15020 "$@")
  local firsts=() reruns=()
  for _ in $(seq "$runs"); do fresh; firsts+=("$(timed "${argv[@]}")"); done
  for _ in $(seq "$runs"); do reruns+=("$(timed "${argv[@]}")"); done
  echo "$(printf '%s\n' "${firsts[@]}" | median) $(printf '%s\n' "${reruns[@]}" | median)"
}

fail=0
printf '%-8s %6s %10s %10s %7s\n' backend ports first_ms rerun_ms ratio
for backend in legacy nft native; do
  case $backend in
    native) flags=(--native-nftables) ;;
    *) flags=(--force-iptables-binary "$backend") ;;
  esac
  read -r first1 rerun1 < <(measure "$ports" "${flags[@]}")
  read -r first2 rerun2 < <(measure $((ports * 2)) "${flags[@]}")
  r1=$(python3 -c "print(f'{$rerun1/$first1:.2f}')")
  r2=$(python3 -c "print(f'{$rerun2/$first2:.2f}')")
  growth=$(python3 -c "print(f'{$rerun2/$rerun1:.2f}')")
  printf '%-8s %6d %10s %10s %7s\n' "$backend" "$ports" "$first1" "$rerun1" "$r1"
  printf '%-8s %6d %10s %10s %7s  (rerun growth %sx)\n' "$backend" $((ports * 2)) "$first2" "$rerun2" "$r2" "$growth"
  python3 -c "import sys; sys.exit(0 if $r1 <= 3 and $growth <= 2.5 else 1)" || fail=1
done
exit $fail

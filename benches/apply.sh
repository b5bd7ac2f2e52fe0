#!/usr/bin/env bash
# Real apply of the default sidecar argv in a fresh network namespace, against a bare
# `iptables-nft-restore --noflush` of the same rules in a fresh namespace (issue 3 item 9:
# ≤ 1.5×), and the iptables processes each run starts (≤ 4 on a fresh pod, ≤ 3 on a rerun with
# nothing to change). Both sides are started the same way (`ip netns exec`), so its cost is in
# both. Everything happens in throwaway namespaces named bench-apply-<pid>-*, deleted on exit.
# Needs root, hyperfine, iproute2, iptables (nft) and strace. Exits 1 if a target is missed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 2; }
cargo build --release --quiet
bin=$PWD/target/release/istio-iptables
# As injected (apply.md §7.1), logging at info; hyperfine discards the log.
argv=(-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --log_output_level=default:info)
runs=${RUNS:-100}
ns=bench-apply-$$
work=$(mktemp -d)
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"' EXIT

# The exact restore input the tool feeds (its dry-run prints it).
ENABLE_INBOUND_IPV6=false "$bin" "${argv[@]}" --dry-run | grep -v '^#' >"$work/rules"

# A new namespace before every timed run; both commands start without a shell (-N).
printf '#!/bin/sh\nip netns del %s 2>/dev/null\nip netns add %s && ip -n %s addr add 240.240.240.240/32 dev lo\n' \
  "$ns" "$ns" "$ns" >"$work/fresh"
chmod +x "$work/fresh"
hyperfine -N --warmup 10 --runs "$runs" --export-json "$work/times.json" --prepare "$work/fresh" \
  -n "iptables-nft-restore --noflush (bare)" "ip netns exec $ns iptables-nft-restore --noflush $work/rules" \
  -n "istio-iptables (fresh apply)" "ip netns exec $ns $bin ${argv[*]@Q}" >&2

# Processes: successful execve calls under the tool, minus the tool itself.
count() { strace -f -qq -e trace=execve -o "$work/trace" ip netns exec "$ns" "$bin" "${argv[@]}" 2>/dev/null;
  grep -c 'execve(.* = 0$' "$work/trace" | awk '{print $1 - 2}'; }  # minus `ip` and the tool
"$work/fresh"
first=$(count)
again=$(count)

read -r bare tool < <(python3 -c '
import json,sys; r=json.load(open(sys.argv[1]))["results"]; print(r[0]["mean"]*1e3, r[1]["mean"]*1e3)' "$work/times.json")
ratio=$(python3 -c "print(f'{$tool/$bare:.2f}')")
printf 'fresh apply %.2f ms, bare restore %.2f ms, ratio %s (target <= 1.5)\n' "$tool" "$bare" "$ratio"
printf 'iptables processes: fresh apply %d (target <= 4), rerun with nothing to change %d (target <= 3)\n' "$first" "$again"
python3 -c "import sys; sys.exit(0 if $ratio <= 1.5 and $first <= 4 and $again <= 3 else 1)"

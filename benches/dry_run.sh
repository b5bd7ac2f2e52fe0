#!/usr/bin/env bash
# Whole-process cost of a dry-run of the default sidecar argv, against spawning /bin/true;
# peak RSS of that run; size of the stripped release binary. Targets (issue 2): ≤ 3× /bin/true,
# ≤ 6 MiB RSS, ≤ 4 MiB binary. Prints the figures and exits 1 if a target is missed.
# Needs hyperfine and GNU time (Debian: apt-get install hyperfine time).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/istio-iptables
argv=(-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --dry-run)
export ENABLE_INBOUND_IPV6=false
runs=${RUNS:-1000}
json=$(mktemp); trap 'rm -f "$json"' EXIT
hyperfine --shell=none --warmup 50 --runs "$runs" --output=null --export-json "$json" \
  -n /bin/true '/bin/true' \
  -n dry-run "$bin ${argv[*]@Q} --log_output_level=default:none" >&2
read -r true_ms tool_ms < <(python3 -c '
import json,sys; r=json.load(open(sys.argv[1]))["results"]; print(r[0]["mean"]*1e3, r[1]["mean"]*1e3)' "$json")
rss_kb=$("$(command -v time || echo /usr/bin/time)" -f %M "$bin" "${argv[@]}" 2>&1 >/dev/null | tail -n 1)
size=$(stat -c %s "$bin")
ratio=$(python3 -c "print(f'{$tool_ms/$true_ms:.2f}')")
printf 'dry-run %.3f ms, /bin/true %.3f ms, ratio %s (target <= 3)\n' "$tool_ms" "$true_ms" "$ratio"
printf 'peak RSS %d KiB (target <= 6144)\n' "$rss_kb"
printf 'binary %d bytes (target <= 4194304)\n' "$size"
python3 -c "import sys; sys.exit(0 if $ratio <= 3 and $rss_kb <= 6144 and $size <= 4194304 else 1)"

#!/usr/bin/env bash
# `--native-nftables` over netlink (the default) against a bare `nft -f -` of the same
# transaction (issue 9: <= 0.25x), side by side in one run, each timed run in a fresh network
# namespace; then the processes a first run and a rerun start (target 0, counted with strace).
#
# Both sides are started the same way: posix_spawn()ed by a small Python timer that has
# entered the namespace (setns) itself, so no `ip netns exec` cost hides the difference. The
# transaction nft gets is the one the tool logs as applied (cleanup + upstream text).
# Namespaces are named bench-nft-<pid>-*, deleted on exit. Needs root, nft, python3, strace.
# RUNS (default 100) sets the number of timed runs per side. Exits 1 if a target is missed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 2; }
bin=${BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=$PWD/target/release/istio-iptables
fi
nft=$(command -v nft)
argv=(--native-nftables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020 --log_output_level=default:info)
ns=bench-nft-$$
work=$(mktemp -d)
trap 'for n in a b c; do ip netns del "$ns-$n" 2>/dev/null || true; done; rm -rf "$work"' EXIT

# The transaction the tool applies, from its own log of a run in a scratch namespace.
ip netns add "$ns-c"
ip netns exec "$ns-c" env -i ENABLE_INBOUND_IPV6=false "$bin" "${argv[@]}" 2>"$work/log"
awk '/nftables rules programmed/ {on=1; next} on && /^ $/ {exit} on' "$work/log" >"$work/transaction"
grep -q '^add rule inet istio-proxy-nat' "$work/transaction" || { echo "no transaction in the log" >&2; exit 1; }

RATIO_FILE=$work/ratio ENABLE_INBOUND_IPV6=false python3 - "$ns" "$nft" "$work/transaction" "${RUNS:-100}" "$bin" "${argv[@]}" <<'EOF'
import ctypes, os, statistics, subprocess, sys, time

ns, nft, transaction, runs, tool = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
text = open(transaction, "rb").read()

def fresh(name):
    subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "add", name], check=True)

devnull = os.open(os.devnull, os.O_WRONLY)
env = {"ENABLE_INBOUND_IPV6": "false", "PATH": "/nonexistent"}

def timed(name, argv, stdin=b""):
    # This (single-threaded) timer enters the namespace itself, then posix_spawn()s (vfork):
    # the cheapest start there is, the same for both sides.
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)
    read_end, write_end = os.pipe()
    os.write(write_end, stdin)  # a few KiB: fits the pipe buffer
    os.close(write_end)
    actions = [(os.POSIX_SPAWN_DUP2, read_end, 0), (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - start
    os.close(read_end)
    if status != 0:
        raise SystemExit(f"{argv[0]} failed in {name} (status {status})")
    return elapsed * 1e3

bare, native, rerun, spawn = [], [], [], []
for i in range(runs):
    fresh(f"{ns}-a"); fresh(f"{ns}-b")
    spawn.append(timed(f"{ns}-a", ["/bin/true"]))
    # Alternate which side goes first, so neither always gets the warmer cache.
    if i % 2:
        bare.append(timed(f"{ns}-a", [nft, "-f", "-"], text)); native.append(timed(f"{ns}-b", tool))
    else:
        native.append(timed(f"{ns}-b", tool)); bare.append(timed(f"{ns}-a", [nft, "-f", "-"], text))
    rerun.append(timed(f"{ns}-b", tool))

def show(label, xs):
    print(f"{label:<34} mean {statistics.mean(xs):7.2f} ms  median {statistics.median(xs):7.2f} ms  min {min(xs):6.2f} ms")
show("nft -f - (bare, fresh namespace)", bare)
show("istio-iptables (fresh namespace)", native)
show("istio-iptables (rerun, unchanged)", rerun)
show("/bin/true (process start alone)", spawn)
ratio = statistics.mean(native) / statistics.mean(bare)
print(f"native apply / bare nft -f -: {ratio:.2f} (target <= 0.25)")
base = statistics.mean(spawn)
net = (statistics.mean(native) - base) / (statistics.mean(bare) - base)
print(f"the same without the process start both pay: {net:.2f} (for information)")
open(os.environ.get("RATIO_FILE", "/dev/null"), "w").write(f"{ratio}\n")
EOF

# Processes and threads started beyond the tool itself (target 0 on a first run and a rerun).
count() {
  ip netns exec "$ns-c" env -i ENABLE_INBOUND_IPV6=false PATH=/nonexistent \
    "$(command -v strace)" -f -qq -e trace=execve,execveat,fork,vfork,clone,clone3 -o "$work/trace" "$bin" "${argv[@]}" 2>/dev/null
  grep -v -e '+++' -e 'exited with' "$work/trace" | tail -n +2 | grep -c . || true
}
ip netns del "$ns-c"; ip netns add "$ns-c"
first=$(count)
again=$(count)
printf 'processes/threads started: first run %d, rerun %d (target 0)\n' "$first" "$again"
awk '{ exit !($1 <= 0.25) }' "$work/ratio" && [ "$first" = 0 ] && [ "$again" = 0 ] || exit 1

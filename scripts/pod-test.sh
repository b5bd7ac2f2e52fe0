#!/usr/bin/env bash
# Runs the init-container images as Kubernetes pods under `podman kube play` and checks what the
# pod's network namespace really does (root; podman, buildah, runc, catatonit, iptables,
# nftables, iproute2, util-linux; the images from scripts/build-image.sh):
#
#   scripts/pod-test.sh
#
# The pods are the project's own examples/ manifests. The test substitutes:
#   - the image: every `registry.example.com/istio-iptables:0.1.0` becomes $ISTIO_IPTABLES_IMAGE
#     (default localhost/istio-iptables:full) or, for istio-validation, $ISTIO_IPTABLES_SCRATCH_IMAGE
#     (default localhost/istio-iptables:scratch);
#   - the regular containers: the examples' busybox app is replaced by the project's own probe
#     (examples/pod_probe.rs, built static here, in a FROM scratch image): a sidecar stand-in as
#     uid 1337 listening on 15001/15006/15020 and an app as uid 1000 listening on 8080;
#   - what podman 4.3 needs to behave like a kubelet: `restartPolicy: Never` (podman applies the
#     pod's restart policy to init containers, so with the default `Always` a finished init
#     container is restarted in a loop and the pod start waits ~20 s), the annotation
#     `io.podman.annotations.init.container.type: always` (reruns the init container on every pod
#     start, and avoids a race removing run-once init containers), and a pod name per case.
# The init containers' args and securityContext are the examples' own, unchanged — except the
# read-only case, which flips istio-init's `readOnlyRootFilesystem` to true.
#
# The pods share a CNI bridge network of their own (10.249.0.0/24, bridge iptpodtest0 with no
# address, no gateway, no masquerade, no firewall plugin), so nothing is written into the host
# namespace's netfilter tables, routes or addresses; the test checks that at the end. Rules that
# istio-cni would install are installed by an OCI prestart hook (podman --hooks-dir), which runs
# the host's binary in the pod's network namespace with nsenter, as istio-cni's plugin does.
#
# Any failed check exits non-zero. Timings are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

full_image=${ISTIO_IPTABLES_IMAGE:-localhost/istio-iptables:full}
scratch_image=${ISTIO_IPTABLES_SCRATCH_IMAGE:-localhost/istio-iptables:scratch}
example_image=registry.example.com/istio-iptables:0.1.0
probe_image=localhost/istio-iptables-probe:test
network=istio-iptables-podtest
cni_conf=/etc/cni/net.d/$network.conflist
work=$(mktemp -d /tmp/istio-iptables-podtest.XXXXXX)
pods=()
started=$(date +%s.%N)
timings=()

fail() { echo "pod-test: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }
passed=0
pass() { echo "   ok: $*"; passed=$((passed + 1)); }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
timed() { # timed LABEL COMMAND...: runs the command, records its wall time, returns its status
  local label=$1 t0 status=0
  shift
  t0=$(date +%s.%N)
  "$@" || status=$?
  timings+=("$label: $(elapsed "$t0") s")
  return "$status"
}

cleanup() {
  local status=$?
  for pod in "${pods[@]}"; do podman pod rm -f -t 0 "$pod" >/dev/null 2>&1 || true; done
  rm -f "$cni_conf"
  ip link del iptpodtest0 2>/dev/null || true
  rm -rf "$work" /var/lib/cni/networks/"$network"
  exit "$status"
}
trap cleanup EXIT

for tool in podman buildah nsenter iptables-nft-save iptables-nft-restore iptables-legacy-save ip; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
for image in "$full_image" "$scratch_image"; do
  podman image exists "$image" || fail "no image $image (run scripts/build-image.sh)"
done

# ---- the host's netfilter state, to prove the test leaves it alone --------------------------
host_netfilter() {
  { iptables-legacy-save; ip6tables-legacy-save; iptables-nft-save; ip6tables-nft-save; nft list ruleset; } 2>&1 |
    { grep -v '^#' || true; } | sed 's/\[[0-9]*:[0-9]*\]//'
  ip -4 route; ip -6 route; ip -4 -o addr
}
host_netfilter > "$work/host-before"

# ---- the probe image ----------------------------------------------------------------------
build_probe() {
  local triple probe ctr
  triple=$(rustc -vV | sed -n 's/^host: //p')
  cargo build --release --locked --quiet --example pod_probe --target "$triple" \
    --config "target.$triple.rustflags = ['-C', 'target-feature=+crt-static']"
  probe=target/$triple/release/examples/pod_probe
  case "$(ldd "$probe" 2>&1 || true)" in
    *"not a dynamic executable"* | *"statically linked"*) ;;
    *) fail "$probe is not static" ;;
  esac
  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$probe" /pod_probe >/dev/null
  buildah config --entrypoint '["/pod_probe"]' --cmd '' "$ctr" >/dev/null
  buildah commit --quiet --rm "$ctr" "$probe_image" >/dev/null
}
step "probe image $probe_image (examples/pod_probe.rs, static)"
t0=$(date +%s.%N)
build_probe
timings+=("build the probe and its image: $(elapsed "$t0") s")

# ---- network ------------------------------------------------------------------------------
[ -e "$cni_conf" ] && fail "$cni_conf exists (another pod test running?)"
mkdir -p /etc/cni/net.d
cat > "$cni_conf" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$network",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "iptpodtest0",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.249.0.0/24" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
EOF

# The binary the host runs (as istio-cni would) and the dry-run reference.
triple=$(rustc -vV | sed -n 's/^host: //p')
host_bin=target/$triple/release/istio-iptables
[ -x "$host_bin" ] || fail "$host_bin missing (scripts/build-static.sh)"
host_bin=$(realpath "$host_bin")

# ---- manifests ----------------------------------------------------------------------------
# pod_manifest EXAMPLE NAME IMAGE [readonly] > file: the example with the substitutions above.
pod_manifest() {
  local example=$1 name=$2 image=$3 readonly=${4:-}
  awk -v image="$image" -v example_image="$example_image" -v name="$name" -v readonly="$readonly" \
      -v probe="$probe_image" '
    /^metadata:/ { print; print "  annotations:"; print "    io.podman.annotations.init.container.type: always";
                   print "    io.github.istio-iptables-rs.podtest-cni: \"" (name ~ /-cni$/ ? "true" : "false") "\""; next }
    /^  name: / && !named { print "  name: " name; named = 1; next }
    /^spec:/ { print; print "  restartPolicy: Never"; next }
    /^  containers:/ { stop = 1 }
    stop { next }
    { gsub(example_image, image) }
    readonly && /readOnlyRootFilesystem: false/ { sub(/false/, "true") }
    { print }
    END {
      print "  containers:"
      print "  - name: istio-proxy"
      print "    image: " probe
      print "    args: [serve, \"15001\", \"15006\", \"15020\"]"
      print "    securityContext: {runAsUser: 1337, runAsGroup: 1337, runAsNonRoot: true, capabilities: {drop: [ALL]}}"
      print "  - name: app"
      print "    image: " probe
      print "    args: [serve, \"8080\"]"
      print "    securityContext: {runAsUser: 1000, runAsGroup: 1000, runAsNonRoot: true, capabilities: {drop: [ALL]}}"
    }' "$example"
}

peer_manifest() {
  cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: $probe_image
    args: [serve, "8080"]
    securityContext: {runAsUser: 1000, runAsGroup: 1000, runAsNonRoot: true}
EOF
}

# play NAME FILE: kube play with this test's network and hooks; the pod is removed at exit.
play() {
  pods+=("$1")
  podman --hooks-dir "$work/hooks" kube play --network "$network" "$2" > "$work/$1.play" 2>&1 || {
    cat "$work/$1.play" >&2
    return 1
  }
}

infra_pid() {
  podman inspect --format '{{.State.Pid}}' "$(podman pod inspect --format '{{.InfraContainerID}}' "$1")"
}
in_pod_netns() { local pod=$1; shift; nsenter --net="/proc/$(infra_pid "$pod")/ns/net" "$@"; }
pod_ip() { in_pod_netns "$1" ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
exit_code() { podman inspect --format '{{.State.ExitCode}}' "$1"; }
state() { podman inspect --format '{{.State.Status}}' "$1"; }
started_at() { podman inspect --format '{{.State.StartedAt}}' "$1"; }

# Saved rules without counters or comments; one family, one variant.
saved_rules() { # saved_rules POD SAVE-PROGRAM
  in_pod_netns "$1" "$2" | { grep -v '^#' || true; } | sed 's/\[[0-9]*:[0-9]*\]//'
}

# The rules the binary's dry-run prints for ARGV in POD's namespace, restored into a throwaway
# namespace with the same iptables and saved again, so both sides are in iptables-save's form.
expected_rules() { # expected_rules POD FAMILY(4|6) ARGV...
  local pod=$1 family=$2 header script netns=ipt-podtest-expect
  shift 2
  in_pod_netns "$pod" "$host_bin" "$@" --dry-run > "$work/dry-run" 2>/dev/null
  [ "$family" = 4 ] && header='# iptables-restore --noflush' || header='# ip6tables-restore --noflush'
  script=$(awk -v h="$header" '/^# ip6?tables-restore/ { on = ($0 == h); next } on' "$work/dry-run")
  ip netns add "$netns"
  local save=iptables-nft-save restore=iptables-nft-restore
  [ "$family" = 6 ] && save=ip6tables-nft-save restore=ip6tables-nft-restore
  {
    [ -z "$script" ] || ip netns exec "$netns" "$restore" --noflush <<<"$script"
    ip netns exec "$netns" "$save" | { grep -v '^#' || true; } | sed 's/\[[0-9]*:[0-9]*\]//'
  } || { ip netns del "$netns"; return 1; }
  ip netns del "$netns"
}

# argv of an example's init container (the block list after `args:`), one word per line.
example_argv() {
  awk -v c="- name: $2" '$0 ~ c { inside = 1 } inside && /^    args:/ { on = 1; next }
    on && /^    - / { sub(/^    - /, ""); gsub(/^"|"$/, ""); print; next } on { exit }' "$1"
}

# connect FROM-CONTAINER ADDR:PORT: the probe server's answer line.
connect() { podman exec "$1" /pod_probe connect "$2"; }

expect_answer() { # expect_answer WHAT FROM-CONTAINER TARGET PATTERN
  local answer
  answer=$(connect "$2" "$3" 2>&1) || fail "$1: $2 -> $3 failed: $answer"
  # shellcheck disable=SC2053 # the expected answer is a glob on purpose (orig=* where it varies)
  [[ "$answer" == $4 ]] || fail "$1: $2 -> $3 answered '$answer', expected '$4'"
  pass "$1: $2 -> $3: $answer"
}

mkdir -p "$work/hooks"
init_example=examples/istio-init-pod.yaml
validation_example=examples/istio-validation-pod.yaml
mapfile -t init_argv < <(example_argv "$init_example" istio-init)
[ "${#init_argv[@]}" -gt 5 ] || fail "no args in $init_example"
# Without the leading `istio-iptables` word, for the host's binary.
host_argv=("${init_argv[@]:1}")

# ---- istio-init --------------------------------------------------------------------------------
check_init_pod() { # check_init_pod NAME [readonly]
  local pod=$1 readonly=${2:-}
  pod_manifest "$init_example" "$pod" "$full_image" "$readonly" > "$work/$pod.yaml"
  local code
  timed "$pod: kube play (init container + 2 containers)" play "$pod" "$work/$pod.yaml" || true
  code=$(exit_code "$pod-istio-init")
  [ "$code" = 0 ] || { podman logs "$pod-istio-init" >&2; fail "$pod: istio-init exited $code"; }
  [ "$(state "$pod-app")" = running ] || fail "$pod: app is not running after istio-init"
  [ "$(state "$pod-istio-proxy")" = running ] || fail "$pod: istio-proxy stand-in is not running"
  pass "$pod: istio-init exited 0 (readOnlyRootFilesystem: $([ -n "$readonly" ] && echo true || echo false)), containers running"

  local family save
  for family in 4 6; do
    [ "$family" = 4 ] && save=iptables-nft-save || save=ip6tables-nft-save
    saved_rules "$pod" "$save" > "$work/$pod.v$family"
    expected_rules "$pod" "$family" "${host_argv[@]}" > "$work/expected.v$family"
    diff -u "$work/expected.v$family" "$work/$pod.v$family" >&2 ||
      fail "$pod: IPv$family rules in the pod differ from the dry-run"
  done
  grep -q -- '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001' "$work/$pod.v4" ||
    fail "$pod: no outbound redirect in the pod's rules"
  if grep -q ISTIO <(in_pod_netns "$pod" iptables-legacy-save); then fail "$pod: rules also in legacy tables"; fi
  pass "$pod: rules in the pod's namespace (nft backend) equal the dry-run for the example's argv"
}

step "istio-init: $init_example with $full_image"
peer=podtest-peer
peer_manifest "$peer" > "$work/$peer.yaml"
timed "$peer: kube play (1 container)" play "$peer" "$work/$peer.yaml" || fail "$peer: kube play failed"
check_init_pod podtest-init
pod=podtest-init
pod_address=$(pod_ip "$pod")
peer_address=$(pod_ip "$peer")
[ -n "$pod_address" ] && [ -n "$peer_address" ] || fail "no pod addresses"

t0=$(date +%s.%N)
expect_answer "app outbound captured, original destination kept" \
  "$pod-app" "$peer_address:8080" "listen=15001 orig=$peer_address:8080 uid=1337"
expect_answer "proxy's own outbound not captured" \
  "$pod-istio-proxy" "$peer_address:8080" "listen=8080 orig=* uid=1000"
expect_answer "inbound from a second pod lands on 15006" \
  "$peer-app" "$pod_address:8080" "listen=15006 orig=$pod_address:8080 uid=1337"
expect_answer "inbound to an excluded port (-d 15020) not captured" \
  "$peer-app" "$pod_address:15020" "listen=15020 orig=* uid=1337"
timings+=("$pod: traffic checks (4 connections): $(elapsed "$t0") s")

step "$scratch_image: dry-run in the pod, as its default non-root user"
t0=$(date +%s.%N)
podman run --rm --pod "$pod" "$scratch_image" "${init_argv[@]}" --dry-run > "$work/scratch-dry-run" 2>"$work/scratch-dry-run.log" ||
  { cat "$work/scratch-dry-run.log" >&2; fail "the scratch image's dry-run failed in $pod"; }
in_pod_netns "$pod" "$host_bin" "${host_argv[@]}" --dry-run 2>/dev/null | diff -u - "$work/scratch-dry-run" >&2 ||
  fail "the scratch image's dry-run differs from the host binary's in the same namespace"
grep -q -- '--uid-owner 1337' "$work/scratch-dry-run" || fail "the scratch image's dry-run has no proxy uid rule"
timings+=("$scratch_image: dry-run container in $pod: $(elapsed "$t0") s")
pass "$scratch_image: dry-run as uid 1337 in the pod prints the host binary's rules"

step "istio-init: rerun in the live namespace, then pod restart"
first_start=$(started_at "$pod-istio-init")
timed "$pod: rerun istio-init in place" podman start --attach "$pod-istio-init" > "$work/rerun.log" 2>&1 ||
  { cat "$work/rerun.log" >&2; fail "$pod: istio-init rerun on its own rules failed"; }
saved_rules "$pod" iptables-nft-save | diff -u "$work/$pod.v4" - >&2 || fail "$pod: rerun changed the rules"
pass "$pod: rerunning istio-init over its own rules exits 0 and changes nothing"
# The probe, as PID 1, ignores SIGTERM: podman kills it after 1 s (and says so on stderr).
timed "$pod: pod stop" podman pod stop -t 1 "$pod" >/dev/null 2>&1 || fail "$pod: pod stop failed"
timed "$pod: pod start (init container runs again)" podman --hooks-dir "$work/hooks" pod start "$pod" >/dev/null ||
  { podman logs "$pod-istio-init" >&2; fail "$pod: pod restart failed"; }
[ "$(started_at "$pod-istio-init")" != "$first_start" ] || fail "$pod: istio-init did not run again on restart"
[ "$(exit_code "$pod-istio-init")" = 0 ] || fail "$pod: istio-init failed on restart"
saved_rules "$pod" iptables-nft-save | diff -u "$work/$pod.v4" - >&2 || fail "$pod: rules differ after restart"
saved_rules "$pod" ip6tables-nft-save | diff -u "$work/$pod.v6" - >&2 || fail "$pod: IPv6 rules differ after restart"
expect_answer "after restart, app outbound still captured" \
  "$pod-app" "$(pod_ip "$peer"):8080" "listen=15001 orig=$(pod_ip "$peer"):8080 uid=1337"
pass "$pod: after a pod restart istio-init ran again and the rules are identical"
podman pod rm -f -t 0 "$pod" >/dev/null

step "istio-init with readOnlyRootFilesystem: true"
check_init_pod podtest-init-ro readonly
expect_answer "read-only root: app outbound captured" \
  "podtest-init-ro-app" "$peer_address:8080" "listen=15001 orig=$peer_address:8080 uid=1337"
podman pod rm -f -t 0 podtest-init-ro >/dev/null

# ---- istio-validation ----------------------------------------------------------------------
step "istio-validation: $validation_example with $scratch_image"
mapfile -t validation_argv < <(example_argv "$validation_example" istio-validation)
# The rules istio-cni would write: the validation argv without the validation flags.
cni_argv=()
for word in "${validation_argv[@]:1}"; do
  case "$word" in --run-validation | --skip-rule-apply) ;; *) cni_argv+=("$word") ;; esac
done
# The prestart hook: runs for the containers of pods annotated podtest-cni "true", before their
# process starts, in the host's namespaces; it enters the pod's network namespace as istio-cni
# does. Rerunning it for later containers of the pod is a no-op (rules already applied).
{
  echo '#!/bin/bash'
  echo 'set -euo pipefail'
  echo 'pid=$(grep -o '"'"'"pid": *[0-9]*'"'"' | grep -o '"'"'[0-9]*$'"'"')'
  printf 'exec nsenter --net=/proc/$pid/ns/net %q' "$host_bin"
  printf ' %q' "${cni_argv[@]}"
  printf ' >>%q 2>&1\n' "$work/cni-hook.log"
} > "$work/cni-hook.sh"
chmod +x "$work/cni-hook.sh"
cat > "$work/hooks/podtest-cni.json" <<EOF
{"version": "1.0.0", "hook": {"path": "$work/cni-hook.sh"},
 "when": {"annotations": {"^io\\\\.github\\\\.istio-iptables-rs\\\\.podtest-cni\$": "^true\$"}},
 "stages": ["prestart"]}
EOF

pod=podtest-validation-cni
pod_manifest "$validation_example" "$pod" "$scratch_image" > "$work/$pod.yaml"
timed "$pod: kube play (rules by the hook, validation passes)" play "$pod" "$work/$pod.yaml" ||
  { cat "$work/cni-hook.log" >&2 || true; fail "$pod: kube play failed"; }
code=$(exit_code "$pod-istio-validation")
[ "$code" = 0 ] || { podman logs "$pod-istio-validation" >&2; fail "$pod: istio-validation exited $code with the rules installed"; }
[ "$(state "$pod-app")" = running ] || fail "$pod: app not running after a passed validation"
grep -q 'ISTIO_OUTPUT' <(saved_rules "$pod" iptables-nft-save) || fail "$pod: the hook installed no rules"
expect_answer "istio-cni rules: app outbound captured" \
  "$pod-app" "$peer_address:8080" "listen=15001 orig=$peer_address:8080 uid=1337"
pass "$pod: rules installed from the host, validation (uid 1337, no capabilities, scratch image) exited 0"
podman pod rm -f -t 0 "$pod" >/dev/null

pod=podtest-validation-norules
pod_manifest "$validation_example" "$pod" "$scratch_image" > "$work/$pod.yaml"
t0=$(date +%s.%N)
# podman reports the failed init container as a failed play; the checks below decide.
play "$pod" "$work/$pod.yaml" || true
timings+=("$pod: kube play (no rules, validation times out): $(elapsed "$t0") s")
code=$(exit_code "$pod-istio-validation")
[ "$code" = 126 ] || { podman logs "$pod-istio-validation" >&2; fail "$pod: istio-validation exited $code without rules, expected 126"; }
podman logs "$pod-istio-validation" > "$work/validation.log" 2>&1
grep -q 'iptables validation failed' "$work/validation.log" ||
  fail "$pod: no validation failure message in the logs"
ran=$(( $(date -d "$(podman inspect --format '{{.State.FinishedAt}}' "$pod-istio-validation" | cut -d' ' -f1,2)" +%s%N) -
         $(date -d "$(started_at "$pod-istio-validation" | cut -d' ' -f1,2)" +%s%N) ))
[ "$ran" -ge 4500000000 ] || fail "$pod: istio-validation gave up after $((ran / 1000000)) ms, before the 5 s probe timeout"
for container in app istio-proxy; do
  case "$(state "$pod-$container")" in
    running | exited) fail "$pod: $container started although validation failed" ;;
  esac
done
pass "$pod: without rules istio-validation exited 126 after $((ran / 1000000)) ms (probe timeout 5 s); the containers did not start"
podman pod rm -f -t 0 "$pod" >/dev/null

# ---- the host is untouched ---------------------------------------------------------------
for pod in "${pods[@]}"; do podman pod rm -f -t 0 "$pod" >/dev/null 2>&1 || true; done
# The bridge is the one thing the test adds to the host namespace (a link with no address but
# its IPv6 link-local one); it goes before the comparison.
ip link del iptpodtest0 2>/dev/null || true
host_netfilter > "$work/host-after"
diff -u "$work/host-before" "$work/host-after" >&2 ||
  fail "the host namespace's netfilter rules, routes or addresses changed"
pass "host namespace: netfilter rules, routes and addresses unchanged"

echo "== timings"
printf '   %s\n' "${timings[@]}"
echo "   total: $(elapsed "$started") s"
echo "pod-test: $passed passed, 0 failed"

#!/usr/bin/env bash
# Builds the release binary with glibc linked statically and proves it is usable:
#
#   scripts/build-static.sh            # prints the binary's path on the last line
#   scripts/build-static.sh --deps-only  # only compile with the same target and flags, no checks
#                                        # (the Dockerfile's cached dependency layer, on stub sources)
#
# Why static: the binary runs in minimal init-container images (and, in CNI setups, from the
# host), so it must not depend on the image's libc. Nothing in it needs NSS, the one part of
# glibc that cannot work statically: /etc/passwd is parsed directly and interface addresses
# come from getifaddrs (netlink). The checks below exercise both.
#
# Why not rustflags in .cargo/config.toml: +crt-static cannot apply to proc-macro crates
# (thiserror, tracing), and only an explicit --target keeps cargo from applying a target's
# rustflags to them. So plain `cargo build`/`cargo test` stay dynamic, in target/{debug,release};
# the static binary is target/<host triple>/release/istio-iptables.
#
# Safe to run anywhere: the binary is only run with --version and --dry-run.
set -euo pipefail
cd "$(dirname "$0")/.."

max_bytes=$((4 * 1024 * 1024))
triple=$(rustc -vV | sed -n 's/^host: //p')
case "$triple" in
  *-linux-gnu) ;;
  *) echo "build-static: needs a *-linux-gnu toolchain, this one is $triple" >&2; exit 1 ;;
esac

cargo build --release --locked --bin istio-iptables --target "$triple" \
  --config "target.$triple.rustflags = ['-C', 'target-feature=+crt-static']"
[ "${1:-}" = --deps-only ] && exit 0
bin="target/$triple/release/istio-iptables"

fail() { echo "build-static: $bin: $*" >&2; exit 1; }

# ldd exits non-zero for a static binary, so read its words rather than its status.
linkage=$(ldd "$bin" 2>&1 || true)
case "$linkage" in
  *"not a dynamic executable"* | *"statically linked"*) echo "ldd: $(echo "$linkage" | head -n1 | sed 's/^[[:space:]]*//')" ;;
  *) fail "not static; ldd says: $linkage" ;;
esac

size=$(wc -c < "$bin")
[ "$size" -le "$max_bytes" ] || fail "$size bytes, over the $max_bytes-byte budget"
echo "size: $size bytes"

"$bin" --version | grep -q '^istio-iptables ' || fail "--version does not print the name"

# Proxy uid from /etc/passwd without NSS: ENVOY_USER=root must give --uid-owner 0.
# Interface addresses: getifaddrs runs unless IPv6 is forced; a host without a non-loopback
# address is the one expected failure (the lookup itself still ran).
rules=$(env -i ENVOY_USER=root "$bin" --dry-run -i '*' 2>&1) || {
  case "$rules" in
    *"no valid local IP address found"*)
      echo "note: this host has no non-loopback address; retrying with --enable-inbound-ipv6=false"
      rules=$(env -i ENVOY_USER=root "$bin" --dry-run -i '*' --enable-inbound-ipv6=false 2>&1) ||
        fail "dry-run failed: $rules" ;;
    *) fail "dry-run failed: $rules" ;;
  esac
}
case "$rules" in
  *"--uid-owner 0 "*) echo "passwd lookup: ENVOY_USER=root -> uid 0" ;;
  *) fail "ENVOY_USER=root did not resolve to uid 0:
$rules" ;;
esac

echo "$bin"

# syntax=docker/dockerfile:1
#
# istio-iptables as an init-container image: a statically linked binary on a small Debian
# runtime that carries only the netfilter tools the binary runs (iptables/ip6tables in their
# legacy and nft variants with -save/-restore, and nft).
#
#   docker build -t registry.example.com/istio-iptables:0.1.0 .
#
# The entrypoint is the binary itself. Istio's injected init container passes
# `args: [istio-iptables, -p, 15001, ...]`; the leading `istio-iptables` word is ignored, the
# same way pilot-agent treats it as its subcommand. Templates that use `command:
# [istio-iptables, ...]` instead find it on PATH.

# ---- build ------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Cargo.toml declares harness-less test targets; cargo refuses a manifest whose target files are missing.
COPY tests ./tests
COPY scripts ./scripts
# build-static.sh links glibc statically and fails unless ldd reports a static executable.
RUN scripts/build-static.sh \
 && install -D -m 0755 "target/$(rustc -vV | sed -n 's/^host: //p')/release/istio-iptables" /out/istio-iptables

# ---- runtime ----------------------------------------------------------------------------
# Debian bookworm ships iptables 1.8.9 (legacy and nft back ends), the version the behaviour
# was specified against.
FROM debian:bookworm-slim
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends iptables nftables; \
    rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man; \
    # Netfilter tools the binary never runs.
    rm -f /usr/sbin/arptables* /usr/sbin/ebtables* /usr/sbin/*-translate /usr/sbin/*tables-apply \
          /usr/sbin/xtables-monitor /usr/sbin/nfnl_osf /usr/bin/iptables-xml; \
    # The proxy user, as in Istio's proxyv2 image: an empty -u resolves ENVOY_USER=istio-proxy
    # to 1337, and the istio-validation container runs as this uid/gid.
    groupadd --gid 1337 istio-proxy; \
    useradd --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin istio-proxy; \
    # Fail the build if a tool the binary runs is missing.
    for tool in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore \
                iptables-legacy iptables-legacy-save iptables-legacy-restore \
                ip6tables-legacy ip6tables-legacy-save ip6tables-legacy-restore \
                iptables-nft iptables-nft-save iptables-nft-restore \
                ip6tables-nft ip6tables-nft-save ip6tables-nft-restore nft; do \
      command -v "$tool"; \
    done
COPY --from=build /out/istio-iptables /usr/local/bin/istio-iptables
# Root by default, as the istio-init container runs; Kubernetes' securityContext decides.
ENTRYPOINT ["/usr/local/bin/istio-iptables"]

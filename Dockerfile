# syntax=docker/dockerfile:1
#
# istio-iptables as an init-container image: a statically linked binary on a small Debian
# runtime that carries only the netfilter tools the binary runs (iptables/ip6tables in their
# legacy and nft variants with -save/-restore, and nft).
#
#   docker build -t registry.example.com/istio-iptables:0.1.0 .
#
# Without registry access, scripts/build-image.sh builds the same content with buildah
# (localhost/istio-iptables:full, and a FROM scratch variant) from Debian packages.
#
# The base images are build arguments, pinned to a version. To pin them by digest as well, pass
# the digest your registry reports (`docker buildx imagetools inspect rust:1.95.0-bookworm`):
#
#   docker build \
#     --build-arg RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm@sha256:<digest> \
#     --build-arg RUNTIME_IMAGE=docker.io/library/debian:bookworm-20250520-slim@sha256:<digest> \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t registry.example.com/istio-iptables:0.1.0 .
#
# The defaults are the toolchain this project's CI uses (Rust 1.95.0) and a dated Debian
# bookworm release (iptables 1.8.9, nftables 1.0.6, as in scripts/build-image.sh).
#
# The entrypoint is the binary itself. Istio's injected init container passes
# `args: [istio-iptables, -p, 15001, ...]`; the leading `istio-iptables` word is ignored, the
# same way pilot-agent treats it as its subcommand. Templates that use `command:
# [istio-iptables, ...]` instead find it on PATH.
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-20250520-slim

# ---- build ------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
# `--build-arg CARGO_NET_OFFLINE=true` with the crates already in $CARGO_HOME/registry (a build
# volume) builds without reaching crates.io; scripts/build-image.sh does that.
ARG CARGO_NET_OFFLINE=false
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when Cargo.toml or Cargo.lock
# change. Stub sources stand in for the crate's targets; build-static.sh --deps-only uses the
# same target and flags as the real build, so the compiled dependencies are reused.
# The manifest also declares harness-less test targets, which cargo wants to exist: stubs here
# too. build.rs embeds the commit for --version; a container build has no .git, so REVISION is
# passed in as ISTIO_IPTABLES_COMMIT.
ARG REVISION=unknown
ENV ISTIO_IPTABLES_COMMIT=${REVISION}
COPY Cargo.toml Cargo.lock build.rs ./
COPY scripts ./scripts
RUN mkdir -p src benches tests/kernel \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs && echo 'fn main() {}' > benches/render.rs \
 && for t in tests/kernel/main.rs tests/golden.rs tests/parity.rs; do echo 'fn main() {}' > "$t"; done \
 && scripts/build-static.sh --deps-only \
 && rm -rf src benches tests
COPY src ./src
COPY benches ./benches
COPY tests ./tests
# build-static.sh links glibc statically and fails unless ldd reports a static executable.
# touch: the real sources must look newer than the stubs whatever times COPY gave them.
RUN touch src/main.rs src/lib.rs \
 && scripts/build-static.sh \
 && install -D -m 0755 "target/$(rustc -vV | sed -n 's/^host: //p')/release/istio-iptables" /out/istio-iptables

# ---- runtime ----------------------------------------------------------------------------
# Debian bookworm ships iptables 1.8.9 (legacy and nft back ends), the version the behaviour
# was specified against.
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="istio-iptables" \
      org.opencontainers.image.description="istio-iptables with iptables (legacy and nft) and nft" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/istio-iptables-rs/istio-iptables" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
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

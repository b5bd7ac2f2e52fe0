#!/usr/bin/env bash
# Builds the init-container images with buildah, pulling nothing from any container registry:
#
#   scripts/build-image.sh               # both images
#   scripts/build-image.sh scratch       # or only one: scratch | full
#   scripts/build-image.sh dockerfile    # the Dockerfile, built against local base images
#
#   localhost/istio-iptables:scratch  FROM scratch: the static binary, /etc/passwd and /etc/group.
#                                     For --dry-run, --run-validation (istio-validation) and
#                                     anything else that runs no netfilter program.
#   localhost/istio-iptables:full     the binary plus iptables 1.8.9 (legacy and nft variants, with
#                                     -save/-restore), nft, and only the shared libraries and
#                                     xtables extensions they load, taken from Debian packages.
#
# Why Debian packages unpacked by hand (apt-get download + dpkg -x) rather than debootstrap: a
# debootstrap rootfs brings a shell, dpkg, apt and coreutils (~100 MiB) that would then have to
# be deleted again, and still needs the same library pruning. Here the packages of iptables'
# and nftables' dependency closure are unpacked into a staging tree, and the image receives only
# the programs, whatever `ldd` says those programs (and the xtables extensions iptables dlopens)
# link against, the dynamic loader, and /etc/protocols. No shell, no package manager.
#
# The versions are the ones this machine's apt sources offer (Debian bookworm: iptables 1.8.9,
# nftables 1.0.6); they are printed, and stored in the image's labels.
#
# `dockerfile` builds the registry users' Dockerfile with `buildah bud`, its RUST_IMAGE and
# RUNTIME_IMAGE arguments pointing at base images made here: a Debian bookworm minbase root from
# debootstrap (Debian packages), and the same plus gcc/libc6-dev and this machine's Rust
# toolchain (`rustc --print sysroot`, without its docs) — Debian's rustc is older than the
# crate's rust-version. The runtime stage's apt-get reaches Debian's package servers, as a Docker
# build would; the crates come from this machine's cargo cache (offline). The result is
# localhost/istio-iptables:dockerfile.
#
# Needs root (buildah), apt-get and dpkg (and debootstrap for `dockerfile`). Work files go to
# target/image-build/.
# IMAGE_REPOSITORY (default localhost/istio-iptables) changes the image names.
set -euo pipefail
cd "$(dirname "$0")/.."

repository=${IMAGE_REPOSITORY:-localhost/istio-iptables}
which_images=${1:-all}
case "$which_images" in
  all | scratch | full | dockerfile) ;;
  *) echo "usage: $0 [all|scratch|full|dockerfile]" >&2; exit 2 ;;
esac

work=target/image-build
rm -rf "$work/scratch-root" "$work/full-root" "$work/staging"
mkdir -p "$work/debs"

echo "== static binary"
bin=$(scripts/build-static.sh | tail -n1)
version=$("$bin" --version | head -n1 | awk '{print $2}')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)

# Files both images carry: the binary and the users. The proxy user is uid/gid 1337, as in
# Istio's proxyv2 image: an empty -u resolves ENVOY_USER=istio-proxy to it by reading
# /etc/passwd, and the istio-validation container runs as it.
base_root() {
  local root=$1
  install -D -m 0755 "$bin" "$root/usr/local/bin/istio-iptables"
  mkdir -p "$root/etc"
  printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
    'istio-proxy:x:1337:1337:istio-proxy:/nonexistent:/usr/sbin/nologin' > "$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'istio-proxy:x:1337:' > "$root/etc/group"
}

# commit_image CONTAINER FLAVOUR USER DESCRIPTION [buildah config options...]: sets the
# entrypoint, default user, PATH and OCI labels, and commits as $repository:FLAVOUR.
commit_image() {
  local ctr=$1 flavour=$2 user=$3 description=$4
  shift 4
  buildah config \
    --entrypoint '["/usr/local/bin/istio-iptables"]' --cmd '' \
    --user "$user" --workingdir / \
    --env PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --label org.opencontainers.image.title=istio-iptables \
    --label "org.opencontainers.image.description=$description" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label org.opencontainers.image.source=https://github.com/istio-iptables-rs/istio-iptables \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    --label "io.github.istio-iptables-rs.flavour=$flavour" \
    "$@" "$ctr" >/dev/null
  buildah commit --quiet --rm "$ctr" "$repository:$flavour" >/dev/null
  echo "built $repository:$flavour: $(image_bytes "$repository:$flavour") bytes"
}

image_bytes() { podman image inspect --format "{{.Size}}" "$1"; }

build_scratch() {
  echo "== $repository:scratch"
  local root=$work/scratch-root ctr
  base_root "$root"
  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$root/" / >/dev/null
  # Non-root by default: the istio-validation container runs as 1337 anyway, and a dry-run needs
  # no privileges. Manifests that apply rules set runAsUser: 0.
  commit_image "$ctr" scratch 1337:1337 \
    "istio-iptables static binary only: dry-run and istio-validation (no netfilter programs)"
}

# Programs the binary runs; the rest of the iptables package (arptables, ebtables,
# translators, monitor) is left out.
netfilter_programs=(
  iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore
  iptables-legacy iptables-legacy-save iptables-legacy-restore
  ip6tables-legacy ip6tables-legacy-save ip6tables-legacy-restore
  iptables-nft iptables-nft-save iptables-nft-restore
  ip6tables-nft ip6tables-nft-save ip6tables-nft-restore
)

# The xtables extensions the rules use: `-m`/`-j` names of testdata/golden (RETURN, ACCEPT and
# DROP are the standard target), and -p tcp/udp/icmp/icmpv6.
xtables_extensions=(standard tcp udp icmp icmp6 owner mark MARK connmark CONNMARK conntrack multiport
  REDIRECT TPROXY CT)

build_full() {
  echo "== $repository:full"
  local root=$work/full-root staging=$work/staging ctr
  local -a packages
  # The dependency closure of iptables and nftables (Depends only; virtual packages dropped).
  mapfile -t packages < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances --no-pre-depends iptables nftables |
    grep -v '^ ' | grep -v '^<' | sort -u)
  [ "${#packages[@]}" -gt 0 ] || { echo "build-image: apt-cache knows no iptables/nftables (apt-get update?)" >&2; exit 1; }
  (cd "$work/debs" && rm -f ./*.deb && apt-get download -qq -o APT::Sandbox::User=root "${packages[@]}")
  mkdir -p "$staging"
  local deb versions=()
  for deb in "$work"/debs/*.deb; do
    dpkg -x "$deb" "$staging"
    versions+=("$(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)")
  done
  local iptables_version nft_version
  iptables_version=$(dpkg-deb -f "$work"/debs/iptables_*.deb Version)
  nft_version=$(dpkg-deb -f "$work"/debs/nftables_*.deb Version)
  echo "packages: ${versions[*]}"

  base_root "$root"
  # iptables-legacy, -nft and friends are symlinks to the two multi-call binaries in the
  # package. The unsuffixed names are Debian alternatives (not created by dpkg -x); point them at
  # the nft variant, Debian's default.
  mkdir -p "$root/usr/sbin"
  local program target
  for program in "${netfilter_programs[@]}"; do
    case "$program" in
      *-legacy*) target=xtables-legacy-multi ;;
      *) target=xtables-nft-multi ;;
    esac
    ln -sf "$target" "$root/usr/sbin/$program"
  done
  cp -a "$staging/usr/sbin/xtables-legacy-multi" "$staging/usr/sbin/xtables-nft-multi" "$staging/usr/sbin/nft" \
    "$root/usr/sbin/"
  # iptables dlopens its match/target extensions, one file per name. Take the ones the rules this
  # binary writes can use (every `-m`/`-j` in testdata/golden, plus the protocol matches and
  # the standard targets), in their libxt_/libipt_/libip6t_ forms, and whatever they link against.
  local xtables_dir extension file
  xtables_dir=$(cd "$staging" && find . -type d -name xtables -path '*/lib/*' | head -n1)
  [ -n "$xtables_dir" ] || { echo "build-image: no xtables extension directory in the iptables package" >&2; exit 1; }
  mkdir -p "$root/$xtables_dir"
  for extension in "${xtables_extensions[@]}"; do
    local found=0
    for file in "$staging/$xtables_dir"/lib{xt,ipt,ip6t}_"$extension".so; do
      [ -e "$file" ] && cp -L "$file" "$root/$xtables_dir/" && found=1
    done
    [ "$found" = 1 ] || { echo "build-image: no xtables extension '$extension' in the iptables package" >&2; exit 1; }
  done
  # Shared libraries: resolved by the system loader against the staging tree only (the
  # staging libc included), so every library comes from the downloaded packages.
  local libdirs lib resolved linkage
  libdirs=$(find "$staging" -name '*.so*' -printf '%h\n' | sort -u | paste -sd:)
  local -A needed=()
  for program in "$root"/usr/sbin/xtables-legacy-multi "$root"/usr/sbin/xtables-nft-multi "$root"/usr/sbin/nft \
    "$root/$xtables_dir"/*.so; do
    linkage=$(LD_LIBRARY_PATH=$libdirs ldd "$program")
    while read -r resolved; do
      case "$resolved" in
        "$staging"/*) needed[${resolved#"$staging"/}]=1 ;;
        *) echo "build-image: $program needs $resolved, not from the downloaded packages" >&2; exit 1 ;;
      esac
    done < <(awk '/=>/ {print $3}' <<<"$linkage")
  done
  for lib in "${!needed[@]}"; do
    mkdir -p "$root/$(dirname "$lib")"
    cp -aL "$staging/$lib" "$root/$lib"
  done
  # The dynamic loader, at the path the programs name as their interpreter.
  local interpreter
  interpreter=$(readelf -l "$staging/usr/sbin/nft" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  mkdir -p "$root/$(dirname "$interpreter")"
  cp -L "$staging$interpreter" "$root$interpreter" 2>/dev/null ||
    cp -L "$staging/usr$interpreter" "$root$interpreter"
  # Protocol names for iptables' -p and iptables-save (from netbase).
  cp "$staging/etc/protocols" "$root/etc/protocols"

  # Proof, before committing: every program runs from the new root with no other library.
  for program in iptables-legacy-save iptables-nft-save ip6tables-legacy-restore nft; do
    chroot "$root" "/usr/sbin/$program" --version >/dev/null ||
      { echo "build-image: $program does not run from the image's root" >&2; exit 1; }
  done

  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$root/" / >/dev/null
  # Root by default, as the istio-init container runs (Istio's template sets runAsUser: 0 anyway).
  commit_image "$ctr" full 0:0 \
    "istio-iptables with iptables (legacy and nft) and nft from Debian packages" \
    --label "io.github.istio-iptables-rs.iptables=$iptables_version" \
    --label "io.github.istio-iptables-rs.nftables=$nft_version"
}

build_dockerfile() {
  local debian_base=localhost/istio-iptables-base/debian:bookworm
  # Tagged with the toolchain's version, so a newer toolchain makes a new base.
  local rust_base
  rust_base=localhost/istio-iptables-base/rust:bookworm-$(rustc -vV | sed -n 's/^release: //p')
  local mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  if ! podman image exists "$debian_base"; then
    echo "== $debian_base (debootstrap --variant=minbase bookworm)"
    local rootfs=$work/debian-rootfs
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 ||
      { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --quiet - "$debian_base" >/dev/null
    rm -rf "$rootfs"
  fi
  if ! podman image exists "$rust_base"; then
    echo "== $rust_base (gcc, libc6-dev, the host's Rust toolchain)"
    local ctr mnt sysroot
    sysroot=$(rustc --print sysroot)
    ctr=$(buildah from "$debian_base")
    buildah run --network host "$ctr" -- sh -c \
      'apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null &&
       rm -rf /var/lib/apt/lists/*'
    mnt=$(buildah mount "$ctr")
    mkdir -p "$mnt/usr/local/rust"
    tar -C "$sysroot" -c bin lib libexec | tar -C "$mnt/usr/local/rust" -x
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env CARGO_HOME=/usr/local/cargo "$ctr"
    buildah commit --quiet --rm "$ctr" "$rust_base" >/dev/null
  fi
  echo "== $repository:dockerfile (buildah bud of the Dockerfile)"
  # Crates come from this machine's cargo cache, mounted where the base's CARGO_HOME expects
  # them, with cargo offline: the build stage needs no crates.io access.
  local registry=${CARGO_HOME:-$HOME/.cargo}/registry
  [ -d "$registry" ] || { echo "build-image: no cargo registry cache at $registry (run a cargo build first)" >&2; exit 1; }
  buildah bud --quiet --network host --layers \
    --volume "$registry:/usr/local/cargo/registry" --build-arg CARGO_NET_OFFLINE=true \
    --build-arg "RUST_IMAGE=$rust_base" --build-arg "RUNTIME_IMAGE=$debian_base" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    -t "$repository:dockerfile" . >/dev/null
  # Name and version only: the build context has no .git, so a commit in --version may differ.
  local built_version
  built_version=$(podman run --rm --network none "$repository:dockerfile" --version | awk 'NR == 1 {print $1, $2}')
  [ "$built_version" = "istio-iptables $version" ] ||
    { echo "build-image: the Dockerfile's image says '$built_version', expected 'istio-iptables $version'" >&2; exit 1; }
  echo "built $repository:dockerfile: $(image_bytes "$repository:dockerfile") bytes"
}

case "$which_images" in
  dockerfile) build_dockerfile ;;
  all) build_scratch; build_full ;;
  scratch) build_scratch ;;
  full) build_full ;;
esac

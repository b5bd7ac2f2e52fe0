#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 30), starting from the committed seeds in
# fuzz/seeds/<target>: the hand-made, named ones plus the corpus of a 10-minute run per target,
# minimised with `cargo fuzz cmin` (the files named by their hash). New inputs go to target/fuzz-corpus/<target> (not committed); a crash
# leaves its input under fuzz/artifacts/<target> and fails the script.
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
targets=(cli_to_render save_parser)

for target in "${targets[@]}"; do
  corpus="target/fuzz-corpus/$target"
  mkdir -p "$corpus"
  echo "== fuzz $target for ${seconds}s"
  # -close_fd_mask=2: the tool logs every rejected input on stderr; libFuzzer's own report stays.
  (cd fuzz && cargo +nightly fuzz run -O "$target" "../$corpus" "seeds/$target" -- \
    -max_total_time="$seconds" -close_fd_mask=2 -print_final_stats=1 -timeout=10 -rss_limit_mb=2048)
done

#!/usr/bin/env bash
# The whole test suite, on a fresh machine: install what the tests need, build once (release),
# check formatting and lints, then run every unit and black-box test against that one build.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-test-deps.sh
cargo build --release --workspace --all-targets
# The test and example plugins, as components, next to the built-ins host/build.rs made.
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true CARGO_PROFILE_RELEASE_LTO=true \
CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort CARGO_PROFILE_RELEASE_OPT_LEVEL=3 \
  cargo build --release --target wasm32-wasip2 --target-dir target/wasm-plugins \
    -p my-balancer -p test-plugin-misbehave -p test-plugin-future-major -p test-plugin-other-world
cargo fmt --all --check
cargo clippy --release --workspace --all-targets -- -D warnings
# The bench-only relays (bench/floor-relay) are their own workspace: same checks.
cargo fmt --check --manifest-path bench/floor-relay/Cargo.toml
cargo clippy --release --manifest-path bench/floor-relay/Cargo.toml \
  --target-dir target/floor-relay -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
SWITCHYARD_BIN="$PWD/target/release/switchyard" KUBECTL="$PWD/.tools/bin/kubectl" \
  cargo test --release --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one summary per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "switchyard: %d passed, %d failed\n", p, f }' "$log"
exit "$status"

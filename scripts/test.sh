#!/usr/bin/env bash
# The whole test suite, on a fresh machine: install what the tests need, build once (release),
# check formatting and lints, then run every unit and black-box test against that one build.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-test-deps.sh
cargo build --release --workspace --all-targets
cargo fmt --all --check
cargo clippy --release --workspace --all-targets -- -D warnings
SWITCHYARD_BIN="$PWD/target/release/switchyard" KUBECTL="$PWD/.tools/bin/kubectl" \
  cargo test --release --workspace

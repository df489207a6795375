#!/usr/bin/env bash
# Every test watchpost has: formatting, lints (which also build the benchmarks), Linux unit and
# end-to-end tests (the sensor tests that need root skip with a message when not root; CI runs
# as root), and the Windows build and unit tests under Wine. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# A test run is not an edit-compile loop: incremental caches would only double the disk it uses.
export CARGO_INCREMENTAL=0

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --target x86_64-pc-windows-gnu -- -D warnings

echo "== Linux tests"
cargo test --workspace --locked

echo "== Windows tests (under Wine)"
scripts/test-windows.sh

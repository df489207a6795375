#!/usr/bin/env bash
# Fresh Debian 12 to a running watchpost shell: installs the build dependencies, builds the
# release binary, and opens the shell on live tables with the example config (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p watchpost
echo "watchpost built: target/release/watchpost. Try: SELECT * FROM watchpost_status;"
echo "The example config tails /tmp/tail.txt and /tmp/tail2.txt: append lines to them and query win_logger_events."
exec target/release/watchpost shell --config examples/osquery.conf

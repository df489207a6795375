#!/usr/bin/env bash
# Builds the crates that must work on Windows for x86_64-pc-windows-gnu and runs their tests
# under Wine; fails if any test fails. Runs scripts/windows-setup.sh first.
#
#   scripts/test-windows.sh                          # every crate of the workspace
#   scripts/test-windows.sh watchpost-ipc            # bare names become -p NAME
#   scripts/test-windows.sh -p watchpost-ipc -- --nocapture   # anything else goes to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/windows-setup.sh

args=()
after_separator=false
previous=""
for arg in "$@"; do
  if ! $after_separator && [[ "$arg" != -* ]] && [[ "$previous" != -p && "$previous" != --package ]]; then
    args+=(-p "$arg")
  else
    args+=("$arg")
  fi
  [ "$arg" = -- ] && after_separator=true
  previous="$arg"
done
[ ${#args[@]} -gt 0 ] || args=(--workspace)

# shellcheck source-path=SCRIPTDIR source=windows/wine-env.sh
source scripts/windows/wine-env.sh
wine_prefix_ready || scripts/windows/prepare-prefix.sh
# One wineserver for the whole run: by default it exits a few seconds after the last exe, and
# a test exe that connects while it is exiting dies with "wine client error: recvmsg:
# Connection reset by peer".
"$WINESERVER" -p
status=0
cargo test --no-fail-fast --target x86_64-pc-windows-gnu "${args[@]}" || status=$?
"$WINESERVER" -k || true
"$WINESERVER" -w || true
exit "$status"

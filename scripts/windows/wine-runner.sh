#!/usr/bin/env bash
# Cargo's runner for x86_64-pc-windows-gnu (see .cargo/config.toml): runs a Windows exe under
# Wine in the project's prefix, creating the prefix on first use. The exe's exit code is ours.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=wine-env.sh
source "$here/wine-env.sh"

if [ ! -x "$WINE" ]; then
  echo "wine-runner: $WINE not found; run scripts/windows-setup.sh first" >&2
  exit 127
fi
wine_prefix_ready || "$here/prepare-prefix.sh"

# Wine now and then fails to start a process at all ("failed to map the shared user data",
# from virtual_alloc_first_teb: a race in its loader over the address space). That happens
# before the exe runs a line, so starting it again is safe; any other failure is the exe's own.
# Its stderr is kept to look for that message and passed on after it exits.
errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
for attempt in 1 2 3; do
  status=0
  "$WINE" "$@" 2>"$errors" || status=$?
  cat "$errors" >&2
  if [ "$status" -ne 0 ] && grep -q -e "failed to map the shared user data" -e "virtual_alloc_first_teb" "$errors"; then
    echo "wine-runner: Wine could not start $1 (attempt $attempt of 3); starting it again" >&2
    continue
  fi
  exit "$status"
done
exit "$status"

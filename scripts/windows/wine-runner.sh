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
exec "$WINE" "$@"

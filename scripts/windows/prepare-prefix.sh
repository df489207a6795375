#!/usr/bin/env bash
# Creates the project's Wine prefix if missing (non-interactively, no display needed) and
# installs the bcryptprimitives.dll stand-in into it. Idempotent; safe to run concurrently.
# Needs wine64 and x86_64-w64-mingw32-gcc (scripts/windows-setup.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=wine-env.sh
source "$here/wine-env.sh"

mkdir -p "$(dirname "$WINEPREFIX")"
exec 9>"$WINEPREFIX.lock"
flock 9

if [ ! -f "$WINEPREFIX/system.reg" ]; then
  echo "windows: creating Wine prefix $WINEPREFIX" >&2
  # wineboot logs many harmless errors without a display: keep them out of the way unless it fails.
  log="$WINEPREFIX.init.log"
  # wineboot returns before the prefix is fully written: wait for the wineserver to finish.
  if ! { timeout 600 "$WINE" wineboot --init && timeout 300 "$WINESERVER" -w; } >"$log" 2>&1 \
    || [ ! -f "$WINEPREFIX/system.reg" ]; then
    cat "$log" >&2
    echo "windows: creating the Wine prefix failed (log above); remove $WINEPREFIX and retry" >&2
    exit 1
  fi
fi

# Rebuild the DLL only when its sources (or the compiler) changed: MinGW output is not
# byte-for-byte reproducible, so comparing DLLs would reinstall it every time.
stamp_file="$WINEPREFIX/watchpost-prng-dll.stamp"
stamp="$(cat "$here/bcryptprimitives.c" "$here/bcryptprimitives.def" <(x86_64-w64-mingw32-gcc --version) | sha256sum)"
if [ ! -f "$WATCHPOST_PRNG_DLL" ] || [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
  echo "windows: installing the bcryptprimitives.dll stand-in into $WINEPREFIX" >&2
  build_dir="$(mktemp -d)"
  trap 'rm -rf "$build_dir"' EXIT
  x86_64-w64-mingw32-gcc -shared -O2 -Wall -Werror -static-libgcc \
    -o "$build_dir/bcryptprimitives.dll" \
    "$here/bcryptprimitives.c" "$here/bcryptprimitives.def" -ladvapi32
  cp "$build_dir/bcryptprimitives.dll" "$WATCHPOST_PRNG_DLL"
  echo "$stamp" >"$stamp_file"
fi

#!/usr/bin/env bash
# Makes this Debian 12 machine ready to build watchpost for Windows and run its tests under
# Wine: the MinGW linker, wine64, the Rust target, and the project's Wine prefix with the
# bcryptprimitives.dll stand-in (scripts/windows/). Idempotent and non-interactive; installing
# packages needs root (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for package in gcc-mingw-w64-x86-64-posix wine64; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "windows-setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v rustup >/dev/null; then
  echo "windows-setup: rustup not found; the x86_64-pc-windows-gnu target needs a rustup toolchain" >&2
  exit 1
fi
rustup target list --installed | grep -qx x86_64-pc-windows-gnu || rustup target add x86_64-pc-windows-gnu

scripts/windows/prepare-prefix.sh

#!/usr/bin/env bash
# Installs what watchpost needs to build and test on Debian 12: apt packages, Rust components
# and targets, the osquery test peer's virtualenv, and the Wine prefix for Windows tests.
# Idempotent; run as root (CI does). Needs a Rust toolchain installed with rustup.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential pkg-config make python3 python3-venv   # build, osquery test peer
  clang libelf-dev zlib1g-dev                            # BPF sensors (libbpf-rs)
  dnsmasq-base                                           # loopback DNS server for network tests
  clamav                                                 # a real endpoint-protection product for win_epp_table tests
  auditd                                                 # the peer agent of the side-by-side benchmarks
  gcc-mingw-w64-x86-64-posix wine64                      # Windows cross-build and tests
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: no Rust toolchain; install one with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target list --installed | grep -qx x86_64-pc-windows-gnu || rustup target add x86_64-pc-windows-gnu

# The osquery-core stand-in creates its venv on first use; do it now so tests start fast.
peer=../shared/osquery-peer
venv=${PEER_VENV:-$HOME/.cache/osquery-peer-venv}
if [ -d "$peer" ] && [ ! -x "$venv/bin/python3" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q osquery==3.1.1 thrift==0.25.0
fi

scripts/windows-setup.sh

# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this
# Sourced by the scripts in this folder: where Wine and the project's Wine prefix are, and the
# environment every Wine call here runs with.
# Override the prefix location with WATCHPOST_WINEPREFIX (default: outside the work tree, so
# it survives `cargo clean` and fresh clones; it takes about 700 MB).

WINE=/usr/lib/wine/wine64
WINESERVER=/usr/lib/wine/wineserver64
[ -x "$WINESERVER" ] || WINESERVER=/usr/lib/wine/wineserver

export WINEPREFIX="${WATCHPOST_WINEPREFIX:-${XDG_CACHE_HOME:-${HOME:?HOME must be set}/.cache}/watchpost-wine}"
export WINEARCH=win64
# Never -all: it would hide the loader errors that explain an exe that dies silently.
export WINEDEBUG="${WINEDEBUG:-fixme-all,err-systray,err-winediag}"
# No Mono/Gecko install prompts, no desktop menu entries.
export WINEDLLOVERRIDES="mscoree,mshtml=;winemenubuilder.exe=d"
# Tests are console programs: without a display Wine cannot open (and wait on) any window.
unset DISPLAY WAYLAND_DISPLAY

# The stand-in for the bcryptprimitives.dll that Wine 8 lacks (see bcryptprimitives.c).
WATCHPOST_PRNG_DLL="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"

wine_prefix_ready() {
  [ -f "$WINEPREFIX/system.reg" ] && [ -f "$WATCHPOST_PRNG_DLL" ]
}

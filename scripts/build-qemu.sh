#!/usr/bin/env bash
# Configure (once) and build qemu-system-x86_64 from qemu/ into build/qemu/.
#
#   scripts/build-qemu.sh [--sanitize | --colo] [ninja targets...]
#
# x86_64-softmmu only, minimal features, with GnuTLS (the logging channel's
# TLS) and Debian's firmware directories as the default firmware path (so
# that QEMU's own qtests find SeaBIOS and the NIC option ROMs).  ccache
# lives in $CACHE_DIR/ccache with base_dir set to the checkout, so a fresh
# clone on the same machine reuses it.
#
# --sanitize builds the same QEMU with AddressSanitizer and
# UndefinedBehaviorSanitizer into build/qemu-asan/ instead (FT_SANITIZE=1
# does the same).  --colo builds the same QEMU with QEMU's own COLO
# (block replication and the COLO proxy) into build/qemu-colo/; only the
# COLO benchmark (tests/bench/bench_colo.py) and, with FT_COLO=1,
# scripts/test.sh (tests/functional/test_colo.py) use it.  Extra arguments are ninja targets, built besides
# qemu-system-x86_64 and qemu-img.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

SANITIZE=${FT_SANITIZE:-0}
COLO=0
while [ $# -gt 0 ]; do
    case $1 in
    --sanitize) SANITIZE=2; shift ;;
    --colo) COLO=1; shift ;;
    *) break ;;
    esac
done
if [ "$COLO" != 0 ]; then
    [ "$SANITIZE" != 2 ] || die "--sanitize and --colo are separate builds"
    SANITIZE=0      # whatever FT_SANITIZE says
fi
Q="$TOP/qemu"
B="$BUILD_DIR/qemu"
[ "$SANITIZE" = 0 ] || B="$BUILD_DIR/qemu-asan"
[ "$COLO" = 0 ] || B="$BUILD_DIR/qemu-colo"
[ -f "$Q/configure" ] || die "qemu/ is not set up; run scripts/fetch-qemu.sh"
[ -x /usr/bin/meson ] || die "meson not installed; run scripts/install-deps.sh"
command -v ccache >/dev/null || die "ccache not installed; run scripts/install-deps.sh"

export CCACHE_DIR="$CACHE_DIR/ccache"
export CCACHE_BASEDIR="$TOP"
export CCACHE_NOHASHDIR=1
export CCACHE_SLOPPINESS=include_file_mtime,include_file_ctime,time_macros,pch_defines
export CCACHE_MAXSIZE=5G
mkdir -p "$CCACHE_DIR"

CONFIGURE_ARGS=(
    --target-list=x86_64-softmmu
    "--python=$HOST_PYTHON"
    --cc="ccache gcc"
    --without-default-features
    --enable-tcg --enable-slirp --enable-pixman --enable-attr --enable-gnutls
    --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
    --disable-docs --disable-werror --disable-user --disable-guest-agent
    --disable-rust --disable-install-blobs --disable-fdt
    --enable-tools
)
if [ "$SANITIZE" != 0 ]; then
    # The sanitizers' own checks; QEMU's coroutines need ASan's fiber
    # support, which gcc 12 has.
    CONFIGURE_ARGS+=(--enable-asan --enable-ubsan --enable-debug-info)
fi
if [ "$COLO" != 0 ]; then
    # QEMU's COLO: migration/colo.c and block/replication.c, and the
    # colo-compare, filter-mirror, filter-redirector and filter-rewriter
    # objects.
    CONFIGURE_ARGS+=(--enable-replication --enable-colo-proxy)
fi
sig=$(printf '%s\n' "${CONFIGURE_ARGS[@]}" | sha256sum | cut -c1-16)

if [ ! -f "$B/build.ninja" ] || [ "$(cat "$B/.ft-config" 2>/dev/null)" != "$sig" ]; then
    info "configuring QEMU in $B"
    rm -rf "$B"
    mkdir -p "$B"
    (cd "$B" && "$Q/configure" "${CONFIGURE_ARGS[@]}" >configure.log 2>&1) || {
        tail -30 "$B/configure.log" >&2
        die "QEMU configure failed (full log: $B/configure.log)"
    }
    echo "$sig" > "$B/.ft-config"
fi

info "building QEMU (ninja in $B)"
start=$(date +%s)
ninja -C "$B" -j"$(nproc)" qemu-system-x86_64 qemu-img "$@" >"$B/ninja.log" 2>&1 || {
    grep -m 30 -E "error|Error" "$B/ninja.log" >&2
    tail -20 "$B/ninja.log" >&2
    die "QEMU build failed (full log: $B/ninja.log)"
}
# A QEMU run from its build tree looks for firmware under qemu-bundle/
# (util/cutils.c: get_relocated_path); point the firmware path there.
for d in /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu; do
    mkdir -p "$B/qemu-bundle$(dirname "$d")"
    ln -sfn "$d" "$B/qemu-bundle$d"
done
info "QEMU built in $(( $(date +%s) - start ))s: $B/qemu-system-x86_64"

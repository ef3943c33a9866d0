# Shared helpers for the project's scripts.  Source it, do not run it.
# shellcheck shell=bash

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TOP

# Pinned QEMU source: Debian source package qemu 1:10.0.13+ds-0+deb13u1.
QEMU_DEB_VERSION="1:10.0.13+ds-0+deb13u1"
QEMU_UPSTREAM="10.0.13"
QEMU_ORIG="qemu_10.0.13+ds.orig.tar.xz"
QEMU_DEBIAN="qemu_10.0.13+ds-0+deb13u1.debian.tar.xz"
QEMU_DSC="qemu_10.0.13+ds-0+deb13u1.dsc"
QEMU_BASE_TAG="v10.0.13-debian-ds"

CACHE_DIR=${FT_CACHE_DIR:-/var/cache/qemu-ft}
BUILD_DIR=${FT_BUILD_DIR:-$TOP/build}

die() {
    echo "error: $*" >&2
    exit 1
}

info() {
    echo "==> $*" >&2
}

need_root() {
    [ "$(id -u)" = 0 ] || die "$1 needs root (run it as root or with sudo)"
}

# The Python that meson and QEMU's build must use (Debian's, not a pyenv one).
HOST_PYTHON=/usr/bin/python3

# Shared helpers for the project's scripts.  Source it, do not run it.
# shellcheck shell=bash
# The settings below are used by the scripts that source this file.
# shellcheck disable=SC2034

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

# The one argument of a builder script: sets FORCE to 1 for --force, to 0
# for none; --help prints the script's header comment and exits.
parse_force_arg() {
    FORCE=0
    case "${1:-}" in
        "") ;;
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (usage: $0 [--force])" ;;
    esac
}

need_root() {
    [ "$(id -u)" = 0 ] || die "$1 needs root (run it as root or with sudo)"
}

# The Python that meson and QEMU's build must use (Debian's, not a pyenv one).
HOST_PYTHON=/usr/bin/python3

# A script run with set -e never ends without saying why: on the first
# failing command, name the script, the line, the command and its status
# (and every status of a pipeline, so that a producer killed by SIGPIPE
# is told apart from a consumer that failed).
ft_on_err() {   # status script line command pipestatus
    local hint=""
    case " $5 " in
        *" 141 "*) hint="; 141 is SIGPIPE: a reader left the pipe before its writer finished" ;;
    esac
    echo "error: ${2#"$TOP"/}:$3: '$4' exited with status $1" \
         "(pipeline: $5$hint)" >&2
}
if [[ $- == *e* ]]; then
    set -o errtrace
    trap 'ft_on_err "$?" "${BASH_SOURCE[0]}" "$LINENO" "$BASH_COMMAND" "${PIPESTATUS[*]}"' ERR
fi

#!/usr/bin/env bash
# Install every build and run dependency of the project from Debian packages.
#
# Adds (idempotently) a deb-src entry for trixie (the pinned QEMU source
# package) and deb/deb-src entries for bookworm-backports (meson >= 1.5 and
# the option ROMs of qemu-system-data 10.0.x).  The mirror URIs are copied
# from the machine's own Debian sources, so no host name is written here.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

command -v apt-get >/dev/null || die "apt-get not found: this project needs a Debian 12 (bookworm) host"

SRC=/etc/apt/sources.list.d/debian.sources
OUR=/etc/apt/sources.list.d/qemu-ft.sources

mirror_uri() {
    # First "URIs:" of a stanza whose Suites include $1.
    awk -v suite="$1" '
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) { print uri; exit } }
        /^$/ { uri = "" }' "$SRC"
}

if [ ! -f "$OUR" ]; then
    need_root "adding apt sources"
    [ -f "$SRC" ] || die "$SRC not found: cannot derive a Debian mirror for deb-src entries"
    uri=$(mirror_uri bookworm)
    [ -n "$uri" ] || die "no 'bookworm' stanza with URIs in $SRC"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    info "adding deb-src (trixie) and bookworm-backports entries from $SRC"
    cat > "$OUR.tmp" <<EOT
# Added by qemu-ft scripts/install-deps.sh (mirror copied from $SRC).
Types: deb deb-src
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: $keyring

Types: deb-src
URIs: $uri
Suites: trixie
Components: main
Signed-By: $keyring
EOT
    mv "$OUR.tmp" "$OUR"
    rm -f "$CACHE_DIR/.apt-updated"
fi

mkdir -p "$CACHE_DIR"
if [ ! -f "$CACHE_DIR/.apt-updated" ] || [ -n "$(find "$OUR" -newer "$CACHE_DIR/.apt-updated")" ]; then
    need_root "apt-get update"
    info "apt-get update"
    apt-get update -q || die "apt-get update failed: check the network and $SRC"
    touch "$CACHE_DIR/.apt-updated"
fi

# installed PKG: is PKG installed?  (dpkg-query's own format, no pipe: a
# grep -q that exits early can kill its producer with SIGPIPE.)
installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

PKGS=(
    # build
    build-essential ninja-build pkg-config ccache git
    libglib2.0-dev libpixman-1-dev libslirp-dev zlib1g-dev libgnutls28-dev
    python3 python3-venv flex bison xz-utils dpkg-dev
    # tests and tools
    python3-pytest clang libclang-rt-14-dev shellcheck
    # gawk: the set-up tests run the scripts with both mawk and gawk as awk
    # (gawk, once installed, is also /usr/bin/awk)
    gawk
    busybox-static cpio iproute2 tcpdump procps strace
    # the NIC option ROMs QEMU's own qtests load (build-qemu.sh adds
    # /usr/lib/ipxe/qemu to the firmware path)
    ipxe-qemu
    # test-io-channel-command runs socat
    socat
    # the TLS tests make their certificates with openssl
    openssl
    # the cluster: corosync + Pacemaker, their command-line tools, and
    # ocf-tester (resource-agents) for the resource agent
    corosync pacemaker pacemaker-cli-utils resource-agents
    # the resource agent pings a node before it attaches a backup there
    iputils-ping
    # tests/bench/report.py draws its plots with matplotlib
    python3-matplotlib
    # a backup on a host whose clock is off (test_ft_clock.py)
    faketime
    # test_ft_smp.py changes one vCPU's registers on a backup through
    # QEMU's gdbstub
    gdb
    # test_ft_fence.py: a storage path that holds writes (FUSE)
    python3-fusepy
    # the Debian guest (scripts/build-debian-guest.sh) and its tests' ssh
    mmdebstrap openssh-client
)
# From bookworm-backports: meson >= 1.5; option ROMs matching QEMU 10.0;
# SeaBIOS 1.16.3 (bookworm's 1.16.2 hangs probing QEMU 10.0's AHCI disks).
BPO_PKGS=(meson python3-pycotap qemu-system-data seabios)

missing=()
for p in "${PKGS[@]}"; do
    installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    need_root "installing packages (${missing[*]})"
    info "installing: ${missing[*]}"
    # corosync and pacemaker must not start as services on this host: the
    # tests run their own nodes.  A policy-rc.d that denies every start
    # (exit 101) does that for the time of the installation.
    policy=/usr/sbin/policy-rc.d
    ours=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# qemu-ft install-deps.sh: no service starts\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        ours=1
    fi
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
    [ -z "$ours" ] || rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get install failed for: ${missing[*]}"
fi

missing=()
for p in "${BPO_PKGS[@]}"; do
    installed "$p" || missing+=("$p")
done
case "$(dpkg-query -W -f='${Version}' meson 2>/dev/null)" in
    0.*|1.[0-4].*) missing+=(meson);;
esac
case "$(dpkg-query -W -f='${Version}' seabios 2>/dev/null)" in
    1.16.[0-2]-*) missing+=(seabios);;
esac
if [ ${#missing[@]} -gt 0 ]; then
    need_root "installing packages (${missing[*]})"
    info "installing from bookworm-backports: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -t bookworm-backports "${missing[@]}" \
        || die "apt-get install -t bookworm-backports failed for: ${missing[*]}"
fi

# Sanity checks on what the build relies on.
mver=$(/usr/bin/meson --version)
case "$mver" in
    0.*|1.[0-4].*) die "meson $mver is too old (QEMU 10.0 needs >= 1.5 from bookworm-backports)";;
esac
dver=$(dpkg-query -W -f='${Version}' qemu-system-data)
case "$dver" in
    1:10.0.*) ;;
    *) die "qemu-system-data $dver does not match QEMU 10.0 (its pvh.bin would make replay stall)";;
esac
[ -f /usr/share/qemu/pvh.bin ] || die "/usr/share/qemu/pvh.bin missing (package qemu-system-data)"
[ -f /usr/share/seabios/bios-256k.bin ] || die "SeaBIOS missing (package seabios)"
sver=$(dpkg-query -W -f='${Version}' seabios)
case "$sver" in
    1.16.[0-2]-*) die "seabios $sver hangs on QEMU 10.0's AHCI; need 1.16.3 from bookworm-backports";;
esac
info "dependencies OK (meson $mver, qemu-system-data $dver, seabios $sver)"

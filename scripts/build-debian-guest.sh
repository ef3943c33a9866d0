#!/usr/bin/env bash
# Build the Debian guest: a bookworm system with systemd, openssh-server
# and SQLite, made from Debian packages with mmdebstrap, in an ext4 disk
# image that a VM boots from (root=/dev/vda, a virtio-blk shared disk).
#
# Usage: scripts/build-debian-guest.sh [--force]
#
# Outputs, in $BUILD_DIR/debian (build/debian/ by default):
#   root.img          raw ext4 image (2 GiB, sparse), label "root"
#   vmlinuz, initrd   the guest's own kernel and initramfs-tools initrd,
#                     for -kernel/-initrd (no boot loader in the image)
#   id_ed25519[.pub]  the key root logs in with over ssh (made here)
#   stamp             hash of the inputs the outputs were built from
# Cache, in $CACHE_DIR/debian (/var/cache/qemu-ft/debian by default): the
# same files, reused while the inputs are the same.
#
# Inputs: the package list below, the suite and mirror (FT_DEBIAN_SUITE,
# default bookworm; FT_DEBIAN_MIRROR, default http://deb.debian.org/debian)
# and this script.  A new build fetches the suite's current packages.
#
# What the image does, besides a stock minimal Debian:
#   - ft-net.service: the address from ft.ip=A.B.C.D/N (and a default
#     route from ft.gw=) on the kernel command line, on the first NIC;
#   - ft-ready.service: prints "FT-READY <uptime>" on the console once
#     sshd listens and the address is up;
#   - root logs in over ssh with id_ed25519 only (root has no password,
#     so the serial console's getty lets nobody in);
#   - timers that would only add noise (apt, man-db, e2scrub, fstrim) are
#     masked.
#
# On success, prints to stdout DEBIAN_IMG=, DEBIAN_KERNEL=, DEBIAN_INITRD=
# and DEBIAN_KEY= lines, so callers can `eval "$(...)"`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

PACKAGES="systemd-sysv,udev,dbus,openssh-server,sqlite3,iproute2,netbase,\
linux-image-amd64,initramfs-tools,e2fsprogs,procps"
SUITE=${FT_DEBIAN_SUITE:-bookworm}
MIRROR=${FT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SIZE=2G

DCACHE="$CACHE_DIR/debian"
OUT="$BUILD_DIR/debian"
FILES="root.img vmlinuz initrd id_ed25519 id_ed25519.pub"

parse_force_arg "$@"

need_root "building the Debian guest (mmdebstrap, file owners in the image)"
for tool in mmdebstrap mkfs.ext4 ssh-keygen sha256sum flock; do
    command -v "$tool" >/dev/null ||
        die "'$tool' not found (run scripts/install-deps.sh)"
done
mkdir -p "$DCACHE" "$OUT"
exec 9>"$DCACHE/.lock"
flock 9

STAMP=$(printf '%s\n' "$PACKAGES" "$SUITE" "$MIRROR" "$SIZE" \
        "builder $(sha256sum "$0" | cut -d' ' -f1)" | sha256sum | cut -d' ' -f1)

print_outputs() {
    echo "DEBIAN_IMG=$OUT/root.img"
    echo "DEBIAN_KERNEL=$OUT/vmlinuz"
    echo "DEBIAN_INITRD=$OUT/initrd"
    echo "DEBIAN_KEY=$OUT/id_ed25519"
}

have_all() {   # DIR: every output there, with the right stamp
    local f
    [ "$(cat "$1/stamp" 2>/dev/null)" = "$STAMP" ] || return 1
    for f in $FILES; do [ -f "$1/$f" ] || return 1; done
}

if [ "$FORCE" = 0 ] && have_all "$OUT"; then
    print_outputs
    exit 0
fi
if [ "$FORCE" = 0 ] && have_all "$DCACHE"; then
    info "Debian guest: from the cache ($DCACHE)"
    for f in $FILES; do cp --sparse=always "$DCACHE/$f" "$OUT/$f.new"; done
    for f in $FILES; do mv "$OUT/$f.new" "$OUT/$f"; done
    cp "$DCACHE/stamp" "$OUT/stamp"
    print_outputs
    exit 0
fi

WORK=$(mktemp -d "$DCACHE/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
root="$WORK/root"

info "Debian guest: mmdebstrap $SUITE ($PACKAGES)"
mmdebstrap --variant=minbase --include="$PACKAGES" \
    "$SUITE" "$root" "$MIRROR" >"$WORK/mmdebstrap.log" 2>&1 ||
    die "mmdebstrap failed (network or mirror?); its log: $(tail -5 "$WORK/mmdebstrap.log")"

info "Debian guest: configuring"
echo ftdebian >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 ftdebian\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"

ssh-keygen -q -t ed25519 -N '' -C ft-test -f "$WORK/id_ed25519"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$WORK/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
cat >"$root/etc/ssh/sshd_config.d/ft.conf" <<'EOF'
PasswordAuthentication no
PermitRootLogin prohibit-password
UseDNS no
EOF

cat >"$root/usr/local/sbin/ft-net" <<'EOF'
#!/bin/sh
# ft.ip=A.B.C.D/N and ft.gw=A.B.C.D from the kernel command line
ip=; gw=
for arg in $(cat /proc/cmdline); do
    case $arg in
        ft.ip=*) ip=${arg#ft.ip=} ;;
        ft.gw=*) gw=${arg#ft.gw=} ;;
    esac
done
ip link set lo up
[ -n "$ip" ] || exit 0
nic=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
[ -n "$nic" ] || { echo "ft-net: no NIC" >&2; exit 1; }
ip addr add "$ip" dev "$nic"
ip link set "$nic" up
[ -z "$gw" ] || ip route add default via "$gw"
EOF
chmod 0755 "$root/usr/local/sbin/ft-net"
cat >"$root/etc/systemd/system/ft-net.service" <<'EOF'
[Unit]
Description=FT test network (ft.ip= on the kernel command line)
Wants=network.target
Before=network.target ssh.service
After=systemd-udev-settle.service sys-subsystem-net-devices.device

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/ft-net

[Install]
WantedBy=multi-user.target
EOF
cat >"$root/etc/systemd/system/ft-ready.service" <<'EOF'
[Unit]
Description=Say FT-READY on the console
After=ssh.service ft-net.service
Requires=ssh.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "FT-READY $(cut -d" " -f1 /proc/uptime)" >/dev/ttyS0'

[Install]
WantedBy=multi-user.target
EOF
for unit in ft-net ft-ready; do
    ln -sf "/etc/systemd/system/$unit.service" \
        "$root/etc/systemd/system/multi-user.target.wants/$unit.service"
done
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer \
            e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
install -d "$root/var/lib/ftdb"

kernel=$(find "$root/boot" -name 'vmlinuz-*' | sort | tail -n 1)
initrd=$(find "$root/boot" -name 'initrd.img-*' | sort | tail -n 1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
    die "no kernel or initrd in the image's /boot (linux-image-amd64, initramfs-tools)"
fi
cp "$kernel" "$WORK/vmlinuz"
cp "$initrd" "$WORK/initrd"

info "Debian guest: mkfs.ext4 -d ($SIZE)"
mkfs.ext4 -q -F -L root -d "$root" "$WORK/root.img" "$SIZE" >&2 ||
    die "mkfs.ext4 -d failed (e2fsprogs >= 1.43)"

for f in $FILES; do mv "$WORK/$f" "$DCACHE/$f.new"; done
for f in $FILES; do mv "$DCACHE/$f.new" "$DCACHE/$f"; done
echo "$STAMP" >"$DCACHE/stamp"
for f in $FILES; do cp --sparse=always "$DCACHE/$f" "$OUT/$f"; done
cp "$DCACHE/stamp" "$OUT/stamp"
info "Debian guest: $(du -sh --apparent-size "$OUT/root.img" | cut -f1) image," \
    "$(du -sh "$OUT/root.img" | cut -f1) used"
print_outputs

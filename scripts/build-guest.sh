#!/usr/bin/env bash
# Build the FT test guest from Debian packages: an uncompressed, PVH-bootable
# kernel and a busybox initramfs whose /init is guest/init.
#
# Usage: scripts/build-guest.sh [--force]
#
# Outputs, in $BUILD_DIR/guest (build/guest/ by default):
#   vmlinux            kernel ELF taken out of the Debian bzImage; boots with
#                      `-kernel vmlinux` through QEMU's pvh.bin
#   initramfs.cpio.gz  newc cpio, gzip: busybox + applet links, the kernel
#                      modules listed in MODULES with their dependencies (and a
#                      modules.dep/modules.alias from `busybox depmod`), /init
#   kernel.release     the kernel version, e.g. 6.1.0-56-amd64
#   stamp              hash of the inputs the outputs were built from
# Cache, in $CACHE_DIR/guest (/var/cache/qemu-ft/guest by default):
#   debs/              the downloaded .deb files
#   kernel-<pkg>_<version>-<hash>/  vmlinux and the module tree cut out of one
#                      kernel package, reused when only the initramfs changes
#
# Inputs: the candidate version of the package linux-image-amd64 depends on
# (override the package with FT_GUEST_KERNEL_PKG), busybox-static (the
# installed /bin/busybox if the package is installed, else the candidate
# .deb), guest/init and this script.  When the outputs exist and the stamp
# matches, nothing is done.  Nothing is installed on the host; the packages
# are unpacked with dpkg-deb -x into scratch folders.
#
# On success, prints to stdout:
#   GUEST_VMLINUX=<path>  GUEST_INITRD=<path>  GUEST_KVER=<version>
# (one per line), so callers can `eval "$(scripts/build-guest.sh)"`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

# Kernel modules the guest may load (their dependencies are added).  The
# three *_generic ones are crypto soft dependencies (ext4 metadata_csum,
# sd_mod's T10 PI) that depmod does not follow.
MODULES="virtio_pci virtio_net virtio_blk virtio_scsi e1000 e1000e ahci ata_piix sd_mod
ext4 crc32c_generic crct10dif_generic crc64_rocksoft_generic"
# Bump when the way the kernel cache is made changes.
KSTAGE_VERSION=2

GCACHE="$CACHE_DIR/guest"
OUT="$BUILD_DIR/guest"
INIT_SRC="$TOP/guest/init"
UDPFLOOD_SRC="$TOP/guest/udpflood.c"
SMPWORK_SRC="$TOP/guest/smpwork.c"

parse_force_arg "$@"

for tool in apt-cache apt-get dpkg-deb dpkg-query sha256sum gzip xz od flock; do
    command -v "$tool" >/dev/null || die "'$tool' not found (needed to build the guest)"
done
[ -f "$INIT_SRC" ] || die "missing $INIT_SRC (the guest's /init)"

mkdir -p "$GCACHE/debs" "$OUT" 2>/dev/null ||
    die "cannot create $GCACHE or $OUT (run as root or set FT_CACHE_DIR/FT_BUILD_DIR)"

# One builder at a time per cache.
exec 9>"$GCACHE/.lock"
flock 9

# ---------------------------------------------------------------- inputs

# Look-ups read a command's whole output into a variable first: a consumer
# that exits early (awk ... exit, grep -q, head) would kill the producer
# with SIGPIPE, which pipefail turns into a failure of the whole script.

# candidate_version PKG: the version apt-get download would fetch.
candidate_version() {
    local policy
    policy=$(apt-cache policy "$1" 2>/dev/null) || true
    awk '/^  Candidate:/ && !v { v = $2 } END { if (v) print v }' <<<"$policy"
}

if [ -n "${FT_GUEST_KERNEL_PKG:-}" ]; then
    KPKG=$FT_GUEST_KERNEL_PKG
else
    KDEPS=$(apt-cache depends linux-image-amd64 2>/dev/null) || true
    KPKG=$(awk '$1 == "Depends:" && $2 ~ /^linux-image-/ && !k { k = $2 }
                END { if (k) print k }' <<<"$KDEPS")
    [ -n "$KPKG" ] || die "cannot resolve linux-image-amd64 to a kernel package" \
        "(apt-cache depends linux-image-amd64 found none; are the apt lists there? try apt-get update)"
fi
KVERSION=$(candidate_version "$KPKG")
if [ -z "$KVERSION" ] || [ "$KVERSION" = "(none)" ]; then
    die "package $KPKG has no installable version (apt-cache policy $KPKG; try apt-get update)"
fi

BB_STATUS=$(dpkg-query -W -f='${db:Status-Status} ${Version}' busybox-static 2>/dev/null || true)
if [ "${BB_STATUS%% *}" = installed ] && [ -x /bin/busybox ]; then
    BB_VERSION=${BB_STATUS#* }
    BB_FROM=installed
else
    BB_VERSION=$(candidate_version busybox-static)
    if [ -z "$BB_VERSION" ] || [ "$BB_VERSION" = "(none)" ]; then
        die "busybox-static is neither installed nor downloadable (apt-cache policy busybox-static)"
    fi
    BB_FROM=deb
fi

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

KSTAGE_KEY=$(printf 'v%s\n%s %s\n%s\n' "$KSTAGE_VERSION" "$KPKG" "$KVERSION" "$MODULES" |
             sha256sum | cut -c1-12)
INPUTS_HASH=$(printf '%s\n' \
    "kernel-stage $KSTAGE_KEY" \
    "busybox $BB_FROM $BB_VERSION" \
    "init $(hash_of "$INIT_SRC")" \
    "udpflood $(hash_of "$UDPFLOOD_SRC")" \
    "smpwork $(hash_of "$SMPWORK_SRC")" \
    "builder $(hash_of "$0")" | sha256sum | cut -d' ' -f1)

print_outputs() {
    echo "GUEST_VMLINUX=$OUT/vmlinux"
    echo "GUEST_INITRD=$OUT/initramfs.cpio.gz"
    echo "GUEST_KVER=$(cat "$OUT/kernel.release")"
}

if [ "$FORCE" = 0 ] && [ -f "$OUT/vmlinux" ] && [ -f "$OUT/initramfs.cpio.gz" ] &&
   [ -f "$OUT/kernel.release" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$INPUTS_HASH" ]; then
    info "guest up to date ($KPKG $KVERSION, busybox $BB_VERSION)"
    print_outputs
    exit 0
fi

# We hold the lock, so scratch folders left here are from killed runs.
rm -rf "$GCACHE"/tmp.* "$OUT"/.tmp.*
SCRATCH=$(mktemp -d "$GCACHE/tmp.XXXXXX")
chmod 755 "$SCRATCH"   # apt-get download runs as _apt and must reach dl.*
cleanup() { rm -rf "$SCRATCH" "${OUT_TMP:-}"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

# fetch_deb PKG VERSION: print the path of the cached .deb, downloading it.
fetch_deb() {
    local pkg=$1 ver=$2 deb dl
    deb="$GCACHE/debs/${pkg}_${ver//:/%3a}_amd64.deb"
    if [ ! -s "$deb" ]; then
        info "downloading $pkg $ver"
        dl=$(mktemp -d "$SCRATCH/dl.XXXXXX")
        # apt drops privileges to _apt for downloads; let it write here.
        if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$dl"; fi
        (cd "$dl" && apt-get download -q "$pkg=$ver" >"$dl.log" 2>&1) || {
            cat "$dl.log" >&2
            die "cannot download $pkg=$ver (apt-get download failed; network or apt lists?)"
        }
        set -- "$dl"/*.deb
        if [ $# != 1 ] || [ ! -s "$1" ]; then
            die "apt-get download $pkg=$ver produced no single .deb"
        fi
        mv "$1" "$deb.part" && mv "$deb.part" "$deb"
    fi
    echo "$deb"
}

# le32 FILE OFFSET: the little-endian 32-bit word at OFFSET, in decimal.
le32() { od -A n -t u4 --endian=little -j "$2" -N 4 "$1" | tr -d ' '; }

# extract_vmlinux BZIMAGE OUT: write the ELF inside a bzImage to OUT.
# The compressed kernel sits in the protected-mode part at payload_offset
# (setup header, boot protocol >= 2.08); if that does not lead to a known
# compression magic, the image is scanned for one, like extract-vmlinux.
extract_vmlinux() {
    local img=$1 out=$2 setup_sects pm off len magic tool
    [ "$(od -A n -t x1 -j $((0x202)) -N 4 "$img" | tr -d ' ')" = 48647253 ] ||
        die "$img is not a bzImage (no HdrS signature)"
    setup_sects=$(od -A n -t u1 -j $((0x1f1)) -N 1 "$img" | tr -d ' ')
    [ "$setup_sects" = 0 ] && setup_sects=4
    pm=$(( (setup_sects + 1) * 512 ))
    off=$(( pm + $(le32 "$img" $((0x248))) ))
    len=$(le32 "$img" $((0x24c)))

    # compression_tool OFFSET: the decompressor for the magic at OFFSET.
    compression_tool() {
        case "$(od -A n -t x1 -j "$1" -N 6 "$img" | tr -d ' ')" in
            fd377a585a00) echo "xz -dc" ;;
            1f8b08*)      echo "gzip -dc" ;;
            28b52ffd*)    echo "zstd -dcq" ;;
            5d0000*)      echo "xz -dc --format=lzma" ;;
            425a68*)      echo "bzip2 -dc" ;;
            02214c18*)    echo "lz4 -dc" ;;
            *) return 1 ;;
        esac
    }

    if tool=$(compression_tool "$off"); then
        # The payload ends with the uncompressed size (le32), which is not
        # part of the compressed stream.
        info "kernel payload at $off ($len bytes, ${tool%% *})"
        dd if="$img" bs=1M iflag=skip_bytes,count_bytes skip="$off" count=$((len - 4)) \
           status=none | $tool >"$out" 2>"$SCRATCH/decompress.err" ||
            { cat "$SCRATCH/decompress.err" >&2; die "decompressing the kernel payload failed"; }
        [ "$(stat -c %s "$out")" = "$(le32 "$img" $((off + len - 4)))" ] ||
            die "decompressed kernel has the wrong size"
    else
        info "payload_offset does not point to a known magic; scanning $img"
        for magic in '\xfd7zXZ\x00' '\x1f\x8b\x08' '\x28\xb5\x2f\xfd' '\x02\x21\x4c\x18' 'BZh'; do
            while read -r off; do
                tool=$(compression_tool "$off") || continue
                command -v "${tool%% *}" >/dev/null || continue
                tail -c +$((off + 1)) "$img" | $tool >"$out" 2>/dev/null || true
                [ "$(head -c 4 "$out" | od -A n -t x1 | tr -d ' ')" = 7f454c46 ] && break 2
            done < <(LC_ALL=C grep -aboP "$magic" "$img" | cut -d: -f1)
        done
    fi
    [ "$(head -c 4 "$out" | od -A n -t x1 | tr -d ' ')" = 7f454c46 ] ||
        die "no ELF kernel found inside $img"
    local notes
    if command -v readelf >/dev/null && notes=$(readelf -n "$out") &&
       ! grep -q 'Xen.*(0x00000012)' <<<"$notes"; then
        die "the extracted kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"
    fi
}

# newc_console: a newc cpio archive holding only the device node
# dev/console (char 5:1), so the kernel can open the console before /init
# mounts devtmpfs.  Written by hand: making a real node needs root.
newc_console() {
    # fields: ino mode uid gid nlink mtime filesize devmaj devmin rdevmaj rdevmin namesize check
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        999999 $((0020600)) 0 0 1 1 0 0 0 5 1 12 0
    printf 'dev/console\0\0\0'           # name (12 bytes) padded to 4 after 110+12
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        0 0 0 0 1 0 0 0 0 0 0 11 0
    printf 'TRAILER!!!\0\0\0\0'          # name (11 bytes) padded to 4 after 110+11
}

# ---------------------------------------------------------------- busybox

if [ "$BB_FROM" = installed ]; then
    BB=/bin/busybox
else
    bbdeb=$(fetch_deb busybox-static "$BB_VERSION")
    dpkg-deb -x "$bbdeb" "$SCRATCH/bbpkg" || die "cannot unpack $bbdeb"
    BB="$SCRATCH/bbpkg/bin/busybox"
fi
[ -x "$BB" ] || die "no busybox binary at $BB"
n_applets=$("$BB" --list-full 2>/dev/null | wc -l)
[ "$n_applets" -gt 100 ] || die "$BB does not run or is not a full busybox"

# ---------------------------------------------------------------- kernel stage

KSTAGE="$GCACHE/kernel-${KPKG}_${KVERSION//:/%3a}-$KSTAGE_KEY"
if [ "$FORCE" = 1 ] || [ ! -f "$KSTAGE/done" ]; then
    kdeb=$(fetch_deb "$KPKG" "$KVERSION")
    info "unpacking $(basename "$kdeb")"
    dpkg-deb -x "$kdeb" "$SCRATCH/kpkg" || die "cannot unpack $kdeb"
    set -- "$SCRATCH"/kpkg/lib/modules/*/
    if [ $# != 1 ] || [ ! -d "$1" ]; then
        die "$kdeb does not hold exactly one lib/modules/<version>"
    fi
    KVER=$(basename "$1")
    KTREE="$SCRATCH/kpkg/lib/modules/$KVER"
    [ -f "$SCRATCH/kpkg/boot/vmlinuz-$KVER" ] || die "$kdeb has no boot/vmlinuz-$KVER"

    ks="$SCRATCH/kstage"
    mkdir -p "$ks/modules/lib/modules/$KVER"
    info "extracting vmlinux from vmlinuz-$KVER"
    extract_vmlinux "$SCRATCH/kpkg/boot/vmlinuz-$KVER" "$ks/vmlinux"

    info "resolving module dependencies (busybox depmod over the whole tree)"
    "$BB" depmod -b "$SCRATCH/kpkg" "$KVER" || die "busybox depmod failed on the kernel tree"
    # Closure of MODULES over modules.dep.  Names compare with '-' as '_'.
    closure=$(awk -v want="$MODULES" '
        function norm(p) { sub(/.*\//, "", p); sub(/\.ko(\.[a-z]+)?$/, "", p); gsub(/-/, "_", p); return p }
        { sub(/:$/, "", $1); n = norm($1); path[n] = $1; deps[n] = "" ;
          for (i = 2; i <= NF; i++) deps[n] = deps[n] " " norm($i) }
        END {
            nq = split(want, q, /[ \n]+/); missing = ""
            for (i = 1; i <= nq; i++) {
                m = q[i]; if (m == "" || m in seen) continue
                if (!(m in path)) { missing = missing " " m; continue }
                seen[m] = 1; print path[m]
                nd = split(deps[m], d, " ")
                for (j = 1; j <= nd; j++) if (!(d[j] in seen)) q[++nq] = d[j]
            }
            if (missing != "") { print "MISSING" missing; exit 1 }
        }' "$KTREE/modules.dep") || {
        # A wanted module may be built in; then it needs nothing here.
        for m in ${closure#*MISSING}; do
            grep -q "/${m//_/[-_]}\.ko$" "$KTREE/modules.builtin" ||
                die "kernel module $m is neither in $KPKG nor built in"
        done
        closure=$(printf '%s\n' "$closure" | grep -v '^MISSING')
    }
    for rel in $closure; do
        mkdir -p "$ks/modules/lib/modules/$KVER/$(dirname "$rel")"
        cp "$KTREE/$rel" "$ks/modules/lib/modules/$KVER/$rel"
    done
    cp "$KTREE/modules.builtin" "$ks/modules/lib/modules/$KVER/"
    # shellcheck disable=SC2086  # one module path per word
    printf '%s\n' $closure | grep -Fx -f - "$KTREE/modules.order" \
        >"$ks/modules/lib/modules/$KVER/modules.order" || true
    "$BB" depmod -b "$ks/modules" "$KVER" || die "busybox depmod failed on the module subset"
    echo "$KVER" >"$ks/kernel.release"
    info "kernel $KVER: $(echo "$closure" | wc -w) modules," \
         "$(du -sh "$ks/modules" | cut -f1) uncompressed"
    touch "$ks/done"
    rm -rf "$KSTAGE"
    mv "$ks" "$KSTAGE"
    # Keep the cache bounded: one kernel stage (the .debs stay).
    for old in "$GCACHE"/kernel-*; do
        [ "$old" = "$KSTAGE" ] || rm -rf "$old"
    done
fi
KVER=$(cat "$KSTAGE/kernel.release")

# ---------------------------------------------------------------- initramfs

info "making the initramfs (busybox $BB_VERSION, kernel $KVER)"
root="$SCRATCH/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,mnt,root,etc,www,var}
cp "$BB" "$root/bin/busybox"
"$BB" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] || [ -e "$root/$applet" ] ||
        ln -s /bin/busybox "$root/$applet"
done
cp -a "$KSTAGE/modules/lib" "$root/"
install -m 0755 "$INIT_SRC" "$root/init"
# A static UDP sender for the held-output tests (busybox nc has no UDP)
gcc -static -O2 -s -o "$root/bin/udpflood" "$UDPFLOOD_SRC" ||
    die "building guest/udpflood.c failed (gcc, libc6-dev)"
# Threads sharing memory and a lock, for the multi-vCPU tests
gcc -static -O2 -s -pthread -o "$root/bin/smpwork" "$SMPWORK_SRC" ||
    die "building guest/smpwork.c failed (gcc, libc6-dev)"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
# Reproducible archive: fixed times and owners, sorted names.
find "$root" -exec touch -h -d @0 {} +
(
    cd "$root"
    cpio_help=$(cpio --help 2>/dev/null) || true
    if grep -q -- --reproducible <<<"$cpio_help"; then
        find . -mindepth 1 | LC_ALL=C sort |
            cpio -o -H newc -R 0:0 --reproducible --quiet
    else
        find . -mindepth 1 | LC_ALL=C sort | "$BB" cpio -o -H newc 2>/dev/null
    fi
    newc_console
) | gzip -n -9 >"$SCRATCH/initramfs.cpio.gz" || die "making the initramfs cpio failed"

# ---------------------------------------------------------------- install

OUT_TMP=$(mktemp -d "$OUT/.tmp.XXXXXX")
cp "$KSTAGE/vmlinux" "$OUT_TMP/vmlinux"
mv "$SCRATCH/initramfs.cpio.gz" "$OUT_TMP/"
echo "$KVER" >"$OUT_TMP/kernel.release"
rm -f "$OUT/stamp"
for f in vmlinux initramfs.cpio.gz kernel.release; do
    mv -f "$OUT_TMP/$f" "$OUT/$f"
done
echo "$INPUTS_HASH" >"$OUT/stamp"
info "guest built: $KPKG $KVERSION, busybox $BB_VERSION," \
     "initramfs $(du -h "$OUT/initramfs.cpio.gz" | cut -f1)"
print_outputs

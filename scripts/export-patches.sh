#!/usr/bin/env bash
# Re-export patches/ from the commits in qemu/ on top of the pristine tag.
# Output is stable (zeroed commit ids, no signature), so an unchanged series
# exports byte for byte the same.
#
#   scripts/export-patches.sh           write patches/
#   scripts/export-patches.sh --check   only check that patches/ is what
#                                       an export would write
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

Q="$TOP/qemu"
[ -d "$Q/.git" ] || die "qemu/ is not set up; run scripts/fetch-qemu.sh"
[ -z "$(git -C "$Q" status --porcelain --untracked-files=no)" ] ||
    die "qemu/ has uncommitted changes; commit them first"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$Q" format-patch -q --zero-commit --no-signature -N --full-index \
    --src-prefix=a/ --dst-prefix=b/ -o "$tmp" "$QEMU_BASE_TAG..HEAD"
shopt -s nullglob
if [ "${1:-}" = "--check" ]; then
    mkdir -p "$TOP/patches"
    diff -r "$TOP/patches" "$tmp" >&2 ||
        die "patches/ differs from an export of qemu/; run scripts/export-patches.sh"
    info "patches/ matches qemu/ ($(find "$tmp" -name "*.patch" | wc -l) patches)"
    exit 0
fi
mkdir -p "$TOP/patches"
rm -f "$TOP"/patches/*.patch
files=("$tmp"/*.patch)
[ ${#files[@]} -eq 0 ] || cp "${files[@]}" "$TOP/patches/"
info "exported ${#files[@]} patches to patches/"

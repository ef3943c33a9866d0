#!/usr/bin/env bash
# Re-export patches/ from the commits in qemu/ on top of the pristine tag.
# Output is stable (zeroed commit ids, no signature), so an unchanged series
# exports byte for byte the same.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

Q="$TOP/qemu"
[ -d "$Q/.git" ] || die "qemu/ is not set up; run scripts/fetch-qemu.sh"
[ -z "$(git -C "$Q" status --porcelain --untracked-files=no)" ] ||
    die "qemu/ has uncommitted changes; commit them first"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$Q" format-patch -q --zero-commit --no-signature -N \
    --src-prefix=a/ --dst-prefix=b/ -o "$tmp" "$QEMU_BASE_TAG..HEAD"
mkdir -p "$TOP/patches"
rm -f "$TOP"/patches/*.patch
shopt -s nullglob
files=("$tmp"/*.patch)
[ ${#files[@]} -eq 0 ] || cp "${files[@]}" "$TOP/patches/"
info "exported ${#files[@]} patches to patches/"

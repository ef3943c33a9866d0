#!/usr/bin/env bash
# Fetch the pinned QEMU source with apt, verify it, unpack it into qemu/ as a
# git work tree (first commit = pristine source, tagged) and apply patches/
# with git am, one commit per patch.
#
# Re-running is safe: an up-to-date qemu/ is left alone.  A qemu/ holding
# work that is not exported to patches/ is never thrown away; pass --force to
# rebuild it from patches/ anyway.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

force=0
[ "${1:-}" = "--force" ] && force=1

# sha256 of the pinned Debian source package files.
declare -A SHA256=(
    [$QEMU_ORIG]=6a0888e806c2ffc0c5f0733e974f9aea55491950d3c47c98669c8b236dde59ae
    [$QEMU_DEBIAN]=da73c092f5684c551b0334d675eb16a3dec91e1edea94759cfb1102fa4a0364e
    [$QEMU_DSC]=a426c892e5369058c3423816c8625bc8010bb5a58ece57261f62b64ee4d765ad
)

SRCDIR="$CACHE_DIR/src"
mkdir -p "$SRCDIR"

verify() {
    local f ok=1
    for f in "${!SHA256[@]}"; do
        if [ ! -f "$SRCDIR/$f" ]; then
            ok=0
        elif ! echo "${SHA256[$f]}  $SRCDIR/$f" | sha256sum -c --quiet - >/dev/null 2>&1; then
            echo "sha256 mismatch: $SRCDIR/$f" >&2
            echo "  expected ${SHA256[$f]}" >&2
            echo "  got      $(sha256sum "$SRCDIR/$f" | cut -d' ' -f1)" >&2
            return 2
        fi
    done
    [ $ok = 1 ]
}

rc=0; verify || rc=$?
if [ $rc = 2 ]; then
    die "the cached QEMU source does not match the pinned sha256; delete $SRCDIR and re-run"
elif [ $rc != 0 ]; then
    command -v apt-get >/dev/null || die "apt-get not found"
    info "downloading Debian source package qemu=$QEMU_DEB_VERSION"
    (cd "$SRCDIR" && apt-get source -d -q "qemu=$QEMU_DEB_VERSION" >apt-source.log 2>&1) || {
        cat "$SRCDIR/apt-source.log" >&2
        die "apt-get source failed: run scripts/install-deps.sh first (it adds the deb-src entry)"
    }
    grep -v "^W: Download is performed unsandboxed" "$SRCDIR/apt-source.log" >&2 || true
    rc=0; verify || rc=$?
    [ $rc = 0 ] || die "downloaded QEMU source does not match the pinned sha256 (see above); refusing to build it"
fi

Q="$TOP/qemu"
g() { git -C "$Q" -c user.name="qemu-ft" -c user.email="qemu-ft@localhost" "$@"; }

patch_ids() {
    # Stable ids of a list of patches (or of a commit range with --range).
    if [ "$1" = "--range" ]; then
        g log -p --reverse --format='commit %H' "$2" | git patch-id --stable | cut -d' ' -f1
    else
        shift
        local p
        for p in "$@"; do git patch-id --stable < "$p" | cut -d' ' -f1; done
    fi
}

shopt -s nullglob
patches=("$TOP"/patches/*.patch)

if [ -d "$Q/.git" ] && g rev-parse -q --verify "refs/tags/$QEMU_BASE_TAG" >/dev/null; then
    want=$(patch_ids --files "${patches[@]}")
    have=$(patch_ids --range "$QEMU_BASE_TAG..HEAD")
    dirty=$(g status --porcelain --untracked-files=no)
    if [ "$want" = "$have" ] && [ -z "$dirty" ]; then
        info "qemu/ is up to date with patches/ (${#patches[@]} patches)"
        exit 0
    fi
    if [ $force = 0 ]; then
        if [ -n "$dirty" ]; then
            die "qemu/ has uncommitted changes; commit them and run scripts/export-patches.sh, or re-run with --force to discard them"
        fi
        # Commits in qemu/ that patches/ does not hold would be lost.
        for id in $have; do
            grep -qx "$id" <<<"$want" ||
                die "qemu/ has commits not exported to patches/; run scripts/export-patches.sh, or re-run with --force to discard them"
        done
    fi
    info "re-applying patches/ on $QEMU_BASE_TAG"
    g am --abort >/dev/null 2>&1 || true
    g checkout -q -f -B ft "$QEMU_BASE_TAG"
    g clean -q -fdx -e /ft
else
    if [ -e "$Q" ]; then
        if [ $force = 0 ] && [ -n "$(ls -A "$Q")" ]; then
            die "qemu/ exists but is not a work tree made by this script; move it away or re-run with --force"
        fi
        rm -rf "$Q"
    fi
    info "unpacking $QEMU_ORIG into qemu/"
    tmp=$(mktemp -d "$TOP/.qemu-unpack.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    tar --no-same-owner -xJf "$SRCDIR/$QEMU_ORIG" -C "$tmp"
    mv "$tmp/qemu-$QEMU_UPSTREAM" "$Q"
    g init -q -b ft
    g config core.autocrlf false
    g config gc.auto 0
    echo "/ft" >> "$Q/.git/info/exclude"
    g add -A -f .
    g commit -q -m "QEMU $QEMU_UPSTREAM (Debian source package qemu $QEMU_DEB_VERSION, pristine)"
    g tag "$QEMU_BASE_TAG"
fi

ln -sfn ../ft "$Q/ft"
if [ ${#patches[@]} -gt 0 ]; then
    info "applying ${#patches[@]} patches"
    g am -q --keep-cr "${patches[@]}" ||
        die "a patch in patches/ does not apply to $QEMU_BASE_TAG (see git -C qemu am --show-current-patch)"
fi
info "qemu/ ready: $(g rev-list --count "$QEMU_BASE_TAG..HEAD") patches on $QEMU_BASE_TAG"

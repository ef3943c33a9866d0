#!/usr/bin/env bash
# A campaign of the replay log fuzzer (tests/fuzz/fuzz-replay-log.c),
# outside the test command, which runs a bounded one.
#
#   scripts/fuzz-replay.sh [--runs N] [--seconds S] [--jobs J]
#
# Defaults: 1,000,000 mutated logs, no time bound, one job.  With --jobs,
# J processes share the corpus and each runs N/J logs.  It starts from
# the tree's corpus (tests/fuzz/replay-corpus) and the campaign's own
# (build/fuzz/replay-campaign), writes inputs that crash, leak, allocate
# more than 64 MiB or run over 10 s to build/fuzz/replay-artifacts/, and
# ends with the number of logs run and of findings.  To keep what it
# found in the tree:
#
#   build/fuzz/fuzz-replay-log -merge=1 tests/fuzz/replay-corpus \
#       build/fuzz/replay-campaign
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

RUNS=1000000
SECONDS_MAX=0
JOBS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --seconds) SECONDS_MAX=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        *) die "usage: $0 [--runs N] [--seconds S] [--jobs J]" ;;
    esac
done

[ -x "$BUILD_DIR/qemu/qemu-system-x86_64" ] || bash "$TOP/scripts/build-qemu.sh"
F="$BUILD_DIR/fuzz"
if [ ! -f "$F/build.ninja" ]; then
    CC=clang /usr/bin/meson setup "$F" "$TOP" -Dfuzz=true \
        -Dqemu_build="$BUILD_DIR/qemu" >/dev/null
else
    /usr/bin/meson configure "$F" -Dqemu_build="$BUILD_DIR/qemu" >/dev/null
fi
ninja -C "$F" fuzz-replay-log >/dev/null

C="$F/replay-campaign"
A="$F/replay-artifacts"
mkdir -p "$C" "$A"
before=$(find "$A" -type f | wc -l)
args=(-max_len=65536 -malloc_limit_mb=64 -timeout=10 -close_fd_mask=2
      -print_final_stats=1 -artifact_prefix="$A/")
[ "$SECONDS_MAX" -gt 0 ] && args+=(-max_total_time="$SECONDS_MAX")
log="$F/replay-campaign.log"
info "fuzz-replay-log: $RUNS logs in $JOBS job(s); log in $log"
t0=$(date +%s)
if [ "$JOBS" -gt 1 ]; then
    # Each job writes fuzz-N.log in the current directory, and the
    # parent copies it into its own output when the job ends.
    rm -f "$F"/fuzz-[0-9]*.log
    (cd "$F" && ./fuzz-replay-log "${args[@]}" -runs=$((RUNS / JOBS)) \
        -jobs="$JOBS" -workers="$JOBS" "$C" "$TOP/tests/fuzz/replay-corpus" \
        >"$log" 2>&1) || true
else
    "$F/fuzz-replay-log" "${args[@]}" -runs="$RUNS" \
        "$C" "$TOP/tests/fuzz/replay-corpus" >"$log" 2>&1 || true
fi
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
       awk '{ n += $1 } END { print n + 0 }')
found=$(( $(find "$A" -type f | wc -l) - before ))
grep -E "^(==[0-9]+==ERROR|SUMMARY)" "$log" || true
info "fuzz-replay-log: $runs logs run in $(( $(date +%s) - t0 )) s," \
     "$found new finding(s) in $A; corpus $(find "$C" -type f | wc -l) files"
[ "$found" -eq 0 ]

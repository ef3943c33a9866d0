#!/usr/bin/env bash
# The project's test command: sets everything up, then runs every test.
#
#   scripts/test.sh [pytest args...]
#
# FT_SANITIZE=1 runs the functional tests on QEMU built with ASan and
# UBSan (build/qemu-asan); FT_FUZZ_SECONDS and FT_FUZZ_REPLAY_SECONDS
# set the fuzz runs' lengths (scripts/fuzz-replay.sh runs long campaigns).
# FT_CHAOS_MINUTES (default 8) sets the chaos run's length
# (tests/chaos/ftchaos.py runs longer ones; 0 skips it).
# FT_COLO=1 also builds QEMU with its own COLO (build/qemu-colo, a second
# full build) and runs tests/functional/test_colo.py, which is left out
# otherwise.
#
# 1. installs Debian packages, fetches and patches QEMU, builds it, the
#    test guest and the Debian guest (each step is cached and skipped when
#    up to date);
# 2. checkpatch on patches/, shellcheck on the scripts, and a check that
#    QEMU without ft/ still links (scripts/check-seam.py);
# 3. C unit tests of ft/ (top-level meson build), and QEMU's own unit
#    tests and qtests for the subsystems the series touches, and QEMU's
#    record/replay functional tests on the local guest (tests/qemu-functional);
# 4. bounded libFuzzer runs of the frame decoder and of QEMU's replay
#    reader (tests/fuzz);
# 5. the set-up scripts under slow producers (tests/setup), and the
#    functional tests (pytest, real QEMU processes and guest).
# Ends with one line counting the tests passed and failed.
set -uo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

FUZZ_SECONDS=${FT_FUZZ_SECONDS:-20}
FUZZ_REPLAY_SECONDS=${FT_FUZZ_REPLAY_SECONDS:-40}
OUT="$BUILD_DIR/test-results"

t0=$(date +%s)
# What each step prints starts with the seconds since the start
step() { info "[$(( $(date +%s) - t0 ))s] $*"; }
bash "$TOP/scripts/install-deps.sh" || die "dependency installation failed"
bash "$TOP/scripts/fetch-qemu.sh" || die "fetching/patching QEMU failed"
bash "$TOP/scripts/build-qemu.sh" || die "building QEMU failed"
bash "$TOP/scripts/build-guest.sh" || die "building the test guest failed"
bash "$TOP/scripts/build-debian-guest.sh" >/dev/null ||
    die "building the Debian guest failed"
if [ "${FT_SANITIZE:-0}" != 0 ]; then
    # The functional tests run on an ASan+UBSan QEMU; a leak at exit is
    # QEMU's own and not reported, any other finding ends QEMU.
    bash "$TOP/scripts/build-qemu.sh" --sanitize || die "building QEMU with ASan failed"
    export FT_QEMU="$BUILD_DIR/qemu-asan/qemu-system-x86_64"
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1
fi
COLO_ARGS=(--ignore="$TOP/tests/functional/test_colo.py")
if [ "${FT_COLO:-0}" != 0 ]; then
    bash "$TOP/scripts/build-qemu.sh" --colo || die "building QEMU with COLO failed"
    COLO_ARGS=()
fi
info "set-up done in $(( $(date +%s) - t0 ))s"

rm -rf "$OUT"
mkdir -p "$OUT"
passed=0
failed=0
failures=()
count() {   # name rc
    if [ "$2" = 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$1")
    fi
}

# count_meson PREFIX LOG TESTLOG_JSON: one count per test meson ran (a
# skipped test counts as failed: nothing here may skip silently).
count_meson() {
    grep -E "^ *[0-9]+/[0-9]+ " "$2"
    if [ ! -s "$3" ]; then
        tail -30 "$2"
        count "$1 (no test ran)" 1
        return
    fi
    while read -r name result; do
        count "$1 $name" "$([ "$result" = OK ] && echo 0 || echo 1)"
    done < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    t = json.loads(line)
    print(t["name"].replace(" ", ""), t["result"])' "$3")
}

# count_tap PREFIX TAP: one count per test in a TAP file (a skipped test
# counts as failed), and one failure if the file does not end with a plan
# matching the results (the run was cut short: timeout, crash).
count_tap() {
    local line planned="" seen=0
    if [ ! -s "$2" ]; then
        count "$1 (no test ran)" 1
        return
    fi
    while IFS= read -r line; do
        case $line in
            "ok "*"# SKIP"*) count "$1 ${line#ok }" 1; seen=$((seen + 1)) ;;
            "ok "*)          count "$1 ${line#ok }" 0; seen=$((seen + 1)) ;;
            "not ok "*)      count "$1 ${line#not ok }" 1; seen=$((seen + 1)) ;;
            1..*)            planned=${line#1..} ;;
        esac
    done <"$2"
    [ "$planned" = "$seen" ] || count "$1 (planned ${planned:-no plan}, ran $seen)" 1
}

step "checkpatch on patches/"
shopt -s nullglob
for p in "$TOP"/patches/*.patch; do
    "$TOP/qemu/scripts/checkpatch.pl" --no-summary -q "$p" >"$OUT/checkpatch.log" 2>&1
    rc=$?
    [ $rc = 0 ] || cat "$OUT/checkpatch.log"
    count "checkpatch $(basename "$p")" $rc
done

step "checkpatch -f on ft/"
"$TOP/qemu/scripts/checkpatch.pl" --no-summary -q -f "$TOP"/ft/*.c "$TOP"/ft/*.h \
    >"$OUT/checkpatch-ft.log" 2>&1
rc=$?
grep -E "^(ERROR|WARNING)" "$OUT/checkpatch-ft.log"
count "checkpatch -f ft/" $rc

step "shellcheck on the scripts"
(cd "$TOP" && shellcheck scripts/*.sh guest/init .ci/run)
count "shellcheck" $?

step "patch series round trip (export of qemu/ == patches/)"
bash "$TOP/scripts/export-patches.sh" --check
count "patches round-trip" $?

step "QEMU without ft/ still links (no symbol outside ft/ is defined only there)"
python3 "$TOP/scripts/check-seam.py" "$BUILD_DIR/qemu"
count "seam: QEMU links without ft/" $?

step "unit tests (meson)"
U="$BUILD_DIR/unit"
if [ ! -f "$U/build.ninja" ]; then
    /usr/bin/meson setup "$U" "$TOP" >"$OUT/unit-setup.log" 2>&1 || {
        cat "$OUT/unit-setup.log"; die "meson setup of the unit tests failed"; }
fi
/usr/bin/meson test -C "$U" --print-errorlogs >"$OUT/unit.log" 2>&1
count_meson unit "$OUT/unit.log" "$U/meson-logs/testlog.json"

step "QEMU's own unit tests and qtests (chardev, QMP, io, TLS, block, net filters), record/replay functional tests"
bash "$TOP/scripts/qemu-tests.sh" >"$OUT/qemu-tests.log" 2>&1
count_meson qemu "$OUT/qemu-tests.log" "$BUILD_DIR/qemu/meson-logs/testlog.json"
for t in "$TOP"/tests/qemu-functional/test_*.py; do
    count_tap qemu-functional "$BUILD_DIR/qemu/tests/functional/$(basename "$t" .py).tap"
done

step "fuzzing the frame decoder for ${FUZZ_SECONDS}s, the replay reader for ${FUZZ_REPLAY_SECONDS}s"
F="$BUILD_DIR/fuzz"
if [ ! -f "$F/build.ninja" ]; then
    CC=clang /usr/bin/meson setup "$F" "$TOP" -Dfuzz=true \
        -Dqemu_build="$BUILD_DIR/qemu" >"$OUT/fuzz-setup.log" 2>&1 || {
        cat "$OUT/fuzz-setup.log"; die "meson setup of the fuzz targets failed"; }
else
    /usr/bin/meson configure "$F" -Dqemu_build="$BUILD_DIR/qemu" >/dev/null
fi
if ninja -C "$F" fuzz-ft-frame >"$OUT/fuzz-build.log" 2>&1; then
    mkdir -p "$F/corpus"
    (cd "$F" && ./fuzz-ft-frame -max_total_time="$FUZZ_SECONDS" -max_len=9000 \
        -print_final_stats=1 corpus >"$OUT/fuzz.log" 2>&1)
    rc=$?
    grep -E "stat::number_of_executed_units|ERROR|SUMMARY" "$OUT/fuzz.log"
    count "fuzz ft-frame" $rc
else
    cat "$OUT/fuzz-build.log"
    count "fuzz ft-frame (build)" 1
fi
# The replay reader: every log in the tree's corpus (seeds from the test
# guest and the inputs that once found a defect) first, then mutations.
# New inputs go to build/fuzz/replay-corpus, never into the tree.
if ninja -C "$F" fuzz-replay-log >"$OUT/fuzz-replay-build.log" 2>&1; then
    mkdir -p "$F/replay-corpus" "$F/replay-artifacts"
    "$F/fuzz-replay-log" -max_total_time="$FUZZ_REPLAY_SECONDS" \
        -max_len=65536 -malloc_limit_mb=64 -timeout=10 -close_fd_mask=2 \
        -print_final_stats=1 -artifact_prefix="$F/replay-artifacts/" \
        "$F/replay-corpus" "$TOP/tests/fuzz/replay-corpus" \
        >"$OUT/fuzz-replay.log" 2>&1
    rc=$?
    grep -E "stat::number_of_executed_units|ERROR|SUMMARY|INITED" "$OUT/fuzz-replay.log"
    count "fuzz replay-log" $rc
else
    cat "$OUT/fuzz-replay-build.log"
    count "fuzz replay-log (build)" 1
fi

step "functional tests (pytest)"
# A bounded chaos run (tests/chaos, docs/chaos.md): 8 minutes unless set
export FT_CHAOS_MINUTES="${FT_CHAOS_MINUTES:-8}"
# The tests' package ft_test lives in tests/functional (docs/development.md)
PYTHONPATH="$TOP/tests/functional${PYTHONPATH:+:$PYTHONPATH}" \
/usr/bin/python3 -m pytest -v -rfE -p no:cacheprovider --durations=30 \
    -o log_cli=true -o log_cli_level=WARNING \
    --junitxml="$OUT/functional.xml" "${COLO_ARGS[@]}" \
    "$TOP/tests/setup" "$TOP/tests/functional" "$@"
if [ -f "$OUT/functional.xml" ]; then
    read -r fp ff < <(python3 -c '
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
s = r if r.tag == "testsuite" else r.find("testsuite")
t, f, e, k = (int(s.get(x, 0)) for x in ("tests", "failures", "errors", "skipped"))
print(t - f - e - k, f + e + k)' "$OUT/functional.xml")
    passed=$((passed + fp))
    failed=$((failed + ff))
    [ "$ff" = 0 ] || failures+=("functional: $ff failed or skipped")
else
    count "functional (pytest did not run)" 1
fi

for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "TESTS: $passed passed, $failed failed ($(( $(date +%s) - t0 ))s)"
[ "$failed" = 0 ]

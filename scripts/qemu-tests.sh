#!/usr/bin/env bash
# QEMU's own unit tests and qtests for every subsystem the patch series
# touches, run on the patched build, so that a change that breaks QEMU for
# users who never turn fault tolerance on fails the test command.
#
#   scripts/qemu-tests.sh
#
# Builds the test programs (ccache), then runs them with `meson test`;
# the results are in build/qemu/meson-logs/testlog.json (and .txt).
#
# Then QEMU's record/replay functional tests, rewritten to boot the
# locally built test guest (tests/qemu-functional/test_*.py, built on
# QEMU's own tests/functional/replay_kernel.py and qemu_test package), run
# the way QEMU's meson runs its functional tests; each file's TAP output is
# in build/qemu/tests/functional/<file>.tap, their logs (QEMU's layout)
# under build/qemu/tests/functional/x86_64/<test id>/.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

# subsystem: unit tests (tests/unit), qtests (tests/qtest)
UNIT=(
    test-char                                           # chardev
    test-qmp-event test-qmp-cmds                        # QMP, QAPI
    test-io-channel-socket test-io-channel-file         # io
    test-io-channel-buffer test-io-channel-command test-io-task
    test-io-channel-tls test-crypto-tlssession          # io: TLS
    test-crypto-tlscredsx509 test-authz-simple test-authz-list
    test-block-backend test-bdrv-drain test-bdrv-graph-mod  # block
    test-blockjob test-image-locking
    test-aio test-thread-pool test-coroutine test-throttle  # main loop
    test-vmstate test-qemu-opts test-keyval test-util-sockets test-yank
    test-iov
)
QTEST=(
    qmp-test qmp-cmd-test test-hmp readconfig-test      # QMP, monitor
    machine-none-test
    test-netfilter test-filter-mirror test-filter-redirector  # net filters
    netdev-socket
    drive_del-test ahci-test ide-test                   # block, AHCI, IDE
    rtc-test                                            # timers
)

B="$BUILD_DIR/qemu"
targets=()
names=()
for t in "${UNIT[@]}"; do
    targets+=("tests/unit/$t")
    names+=("$t")
done
for t in "${QTEST[@]}"; do
    targets+=("tests/qtest/$t")
    names+=("qtest-x86_64/$t")
done

# No results of an earlier run may be taken for this one's, even if the
# build below fails.
F="$B/tests/functional"
rm -f "$B/meson-logs/testlog.json" "$F"/*.tap
bash "$TOP/scripts/build-qemu.sh" "${targets[@]}"
info "QEMU's own tests: ${#UNIT[@]} unit tests, ${#QTEST[@]} qtests"
rc=0
/usr/bin/meson test -C "$B" --no-rebuild --print-errorlogs "${names[@]}" || rc=$?

# As QEMU's tests/functional/meson.build: the emulator, qemu-img, the build
# root and PYTHONPATH in the environment, the build root as the working
# directory (ReplayKernelBase runs ./scripts/replay-dump.py there; the build
# root's scripts/ links to QEMU's), a timeout per file (the one QEMU gives
# x86_64_replay).  Debian's python first on PATH: replay-dump.py's
# shebang is "env python3".
mkdir -p "$F"
for t in "$TOP"/tests/qemu-functional/test_*.py; do
    name=$(basename "$t" .py)
    info "QEMU functional test $name"
    (cd "$B" &&
     PATH=/usr/bin:$PATH \
     QEMU_TEST_QEMU_BINARY="$B/qemu-system-x86_64" \
     QEMU_TEST_QEMU_IMG="$B/qemu-img" \
     QEMU_BUILD_ROOT="$B" \
     PYTHONPATH="$TOP/qemu/python:$TOP/qemu/tests/functional" \
     timeout 480 "$HOST_PYTHON" "$t") | tee "$F/$name.tap" || rc=$?
done
exit "$rc"

#!/usr/bin/env bash
# QEMU's own unit tests and qtests for every subsystem the patch series
# touches, run on the patched build, so that a change that breaks QEMU for
# users who never turn fault tolerance on fails the test command.
#
#   scripts/qemu-tests.sh
#
# Builds the test programs (ccache), then runs them with `meson test`;
# the results are in build/qemu/meson-logs/testlog.json (and .txt).
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
    drive_del-test ahci-test                            # block, AHCI
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

bash "$TOP/scripts/build-qemu.sh" "${targets[@]}"
info "QEMU's own tests: ${#UNIT[@]} unit tests, ${#QTEST[@]} qtests"
rm -f "$B/meson-logs/testlog.json"
exec /usr/bin/meson test -C "$B" --no-rebuild --print-errorlogs "${names[@]}"

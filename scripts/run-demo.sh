#!/usr/bin/env bash
# The project's main job, at this stage of the project: set everything up,
# then boot the default test guest under the patched QEMU recording its
# execution (-icount rr=record), show where its replay log goes and how it
# grows, and replay the log to show it reproduces the run.
#
#   scripts/run-demo.sh [--ticks N]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ticks=10
while [ $# -gt 0 ]; do
    case "$1" in
        --ticks) ticks=${2:?--ticks needs a number}; shift 2;;
        -h|--help) sed -n '2,8p' "$0"; exit 0;;
        *) die "unknown option $1 (see --help)";;
    esac
done
case "$ticks" in ''|*[!0-9]*) die "--ticks wants a number";; esac

bash "$TOP/scripts/install-deps.sh"
bash "$TOP/scripts/fetch-qemu.sh"
bash "$TOP/scripts/build-qemu.sh"
bash "$TOP/scripts/build-guest.sh"

QEMU="$BUILD_DIR/qemu/qemu-system-x86_64"
G="$BUILD_DIR/guest"
D="$BUILD_DIR/demo"
mkdir -p "$D"
LOG="$D/primary.rrlog"
rm -f "$LOG" "$D"/*.console

vm() {  # rr-mode console-file
    "$QEMU" -machine q35 -cpu Nehalem -smp 1 -m 256 -nodefaults -display none \
        -L /usr/share/qemu -L /usr/share/seabios \
        -icount "shift=5,rr=$1,rrfile=$LOG" \
        -kernel "$G/vmlinux" -initrd "$G/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet mitigations=off cryptomgr.notests initcall_blacklist=crypto_kdf108_init init_on_alloc=0 ft.work=ticker,cpu ft.ticks=$ticks ft.cpu_iters=20 ft.poweroff=1" \
        -net none -serial "file:$2"
}

echo
echo "Recording the default guest (ticker + CPU job, $ticks ticks)."
echo "Replay log: $LOG"
vm record "$D/record.console" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
last=0
while kill -0 $pid 2>/dev/null; do
    sleep 1
    size=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
    line=$(tr -d '\r' <"$D/record.console" 2>/dev/null | grep -E '^(TICK|CPU|FT-)' | tail -1 || true)
    printf '  log %8d bytes (+%6d B/s)  guest: %s\n' "$size" $((size - last)) "$line"
    last=$size
done
wait $pid || die "recording QEMU failed"
trap - EXIT
echo
echo "Recorded console:"
tr -d '\r' <"$D/record.console" | grep -E '^(FT-|TICK|CPU)' | sed 's/^/  /'
echo
echo "Replaying $LOG ..."
start=$(date +%s%N)
vm replay "$D/replay.console" || die "replay QEMU failed"
end=$(date +%s%N)
if cmp -s "$D/record.console" "$D/replay.console"; then
    echo "Replay reproduced the recorded console output exactly ($(( (end - start) / 1000000 )) ms)."
else
    diff <(tr -d '\r' <"$D/record.console") <(tr -d '\r' <"$D/replay.console") | head -20
    die "replay differs from the recording"
fi

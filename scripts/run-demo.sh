#!/usr/bin/env bash
# The project's main job: set everything up, then start a protected pair of
# the default test guest on this machine (a primary and a backup, two QEMU
# processes with a logging channel and a shared lock directory), show their
# live status, and kill the primary with kill -9 (when you press Enter, or
# after --kill-after seconds) to watch the backup take over; with
# --reprotect N, N failovers in a row, each followed by a new backup.
#
#   scripts/run-demo.sh [--kill-after S] [--watch S] [--work ticker,cpu]
#                       [--reprotect [N]] [--protected-for S]
#
# With --cluster, the cluster's main job instead (scripts/ft-cluster-demo.py):
# three corosync + Pacemaker nodes on this machine run the VM as a
# promotable clone of ocf:qemu-ft:vm; the primary's node is lost, the
# backup goes live and Pacemaker starts a new backup on the third node.
#
#   scripts/run-demo.sh --cluster [--kill-after S] [--watch S]
#                       [--fault node|partition|qemu]
#
# With --debian, a real Debian system (scripts/build-debian-guest.sh) as
# the protected VM (scripts/ft-debian-demo.py): an ssh session commits
# SQLite rows across the kill; then every acknowledged row is checked,
# the guest powered off and its file system checked.
#
#   scripts/run-demo.sh --debian [--kill-after S] [--smp N]
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

case "${1:-}" in -h|--help) sed -n '2,25p' "$0"; exit 0;; esac

bash "$TOP/scripts/install-deps.sh"
bash "$TOP/scripts/fetch-qemu.sh"
bash "$TOP/scripts/build-qemu.sh"
bash "$TOP/scripts/build-guest.sh"

if [ "${1:-}" = --debian ]; then
    shift
    bash "$TOP/scripts/build-debian-guest.sh" >/dev/null
    exec "$HOST_PYTHON" "$TOP/scripts/ft-debian-demo.py" "$@"
fi
if [ "${1:-}" = --cluster ]; then
    shift
    exec "$HOST_PYTHON" "$TOP/scripts/ft-cluster-demo.py" "$@"
fi
exec "$HOST_PYTHON" "$TOP/scripts/ft-demo.py" "$@"

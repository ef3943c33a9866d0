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
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

case "${1:-}" in -h|--help) sed -n '2,10p' "$0"; exit 0;; esac

bash "$TOP/scripts/install-deps.sh"
bash "$TOP/scripts/fetch-qemu.sh"
bash "$TOP/scripts/build-qemu.sh"
bash "$TOP/scripts/build-guest.sh"

exec "$HOST_PYTHON" "$TOP/scripts/ft-demo.py" "$@"

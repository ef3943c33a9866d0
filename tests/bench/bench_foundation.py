#!/usr/bin/env python3
#
# Foundation figures, measured side by side in one run (interleaved, so
# host noise hits every configuration alike):
#   - guest boot time to FT-READY: plain TCG, -icount shift=5, and
#     -icount shift=5,rr=record;
#   - record versus replay wall time of the same guest run (ticker + CPU).
# Prints medians and ratios.  Not a test: nothing is asserted.
#
#   python3 tests/bench/bench_foundation.py [--rounds N]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
import ftlib  # noqa: E402
from ftlib import QEMUMachine, Console  # noqa: E402


def run_vm(workdir, name, append, icount, wait_for, until_exit=False):
    vm = QEMUMachine(ftlib.QEMU_BIN, name=name, base_temp_dir=workdir)
    con = Console(os.path.join(workdir, name + '.console'))
    vm.add_args('-machine', 'q35', '-cpu', 'Nehalem', '-m', '256',
                '-nodefaults', '-net', 'none',
                '-kernel', os.path.join(ftlib.GUEST_DIR, 'vmlinux'),
                '-initrd', os.path.join(ftlib.GUEST_DIR, 'initramfs.cpio.gz'),
                '-append', append, '-serial', f'file:{con.path}',
                '-L', '/usr/share/qemu', '-L', '/usr/share/seabios')
    if icount:
        vm.add_args('-icount', icount)
    t0 = time.monotonic()
    vm.launch()
    try:
        con.wait(wait_for, 600, vm)
        if until_exit:
            vm.wait(timeout=600)
        return time.monotonic() - t0, con.text()
    finally:
        vm.shutdown(hard=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=3)
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix='bench-foundation.')
    boot = {'tcg': [], 'icount': [], 'record': []}
    rr = {'record': [], 'replay': []}
    log = os.path.join(workdir, 'rr.log')
    base = ftlib.FAST_BOOT + ' ft.work=ticker'
    work = ftlib.FAST_BOOT + ' ft.work=ticker,cpu ft.ticks=10 ft.cpu_iters=20 ft.poweroff=1'
    for r in range(args.rounds):
        boot['tcg'].append(run_vm(workdir, 'tcg', base, None, '^FT-READY')[0])
        boot['icount'].append(run_vm(workdir, 'ic', base, 'shift=5',
                                     '^FT-READY')[0])
        boot['record'].append(run_vm(workdir, 'rec', base,
                                     f'shift=5,rr=record,rrfile={log}.boot',
                                     '^FT-READY')[0])
        t, rec_out = run_vm(workdir, 'wrec', work,
                            f'shift=5,rr=record,rrfile={log}', '^FT-DONE',
                            until_exit=True)
        rr['record'].append(t)
        t, rep_out = run_vm(workdir, 'wrep', work,
                            f'shift=5,rr=replay,rrfile={log}', '^FT-DONE',
                            until_exit=True)
        rr['replay'].append(t)
        same = rec_out == rep_out
        print(f'round {r + 1}: boot tcg {boot["tcg"][-1]:.2f}s '
              f'icount {boot["icount"][-1]:.2f}s record {boot["record"][-1]:.2f}s; '
              f'run record {rr["record"][-1]:.2f}s replay {rr["replay"][-1]:.2f}s '
              f'(console {"identical" if same else "DIFFERENT"}, '
              f'log {os.path.getsize(log)} bytes)', flush=True)
    med = {k: statistics.median(v) for k, v in {**boot, **{'run-' + k: v for k, v in rr.items()}}.items()}
    print()
    print('| figure | median (s) | ratio |')
    print('|---|---:|---:|')
    print(f'| boot to FT-READY, plain TCG | {med["tcg"]:.2f} | 1.00 |')
    print(f'| boot to FT-READY, -icount shift=5 | {med["icount"]:.2f} | {med["icount"] / med["tcg"]:.2f} |')
    print(f'| boot to FT-READY, icount + rr=record | {med["record"]:.2f} | {med["record"] / med["tcg"]:.2f} |')
    print(f'| ticker+cpu run, record | {med["run-record"]:.2f} | 1.00 |')
    print(f'| same run, replay | {med["run-replay"]:.2f} | {med["run-replay"] / med["run-record"]:.2f} |')


if __name__ == '__main__':
    main()

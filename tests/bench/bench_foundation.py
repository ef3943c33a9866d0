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
import time

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
from ft_test import Workdir, guest_args  # noqa: E402


def run_vm(wd, name, append, wait_for, until_exit=False, **icount):
    """Boot VM @name in Workdir @wd (see its make_vm() for @icount); the
    wall time to @wait_for on its console (or to its exit), and the
    console."""
    vm, con = wd.make_vm(name, append, **icount)
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
    with Workdir('bench_foundation') as wd:
        rounds(wd, args.rounds)


def rounds(wd, n):
    boot = {'tcg': [], 'icount': [], 'record': []}
    rr = {'record': [], 'replay': []}
    log = wd.scratch('rr.log')
    base = guest_args(work='ticker')
    work = guest_args(work='ticker,cpu', ticks=10, cpu_iters=20, poweroff=1)
    for r in range(n):
        boot['tcg'].append(run_vm(wd, 'tcg', base, '^FT-READY',
                                  shift=None)[0])
        boot['icount'].append(run_vm(wd, 'ic', base, '^FT-READY')[0])
        boot['record'].append(run_vm(wd, 'rec', base, '^FT-READY',
                                     rr='record', rrfile=log + '.boot')[0])
        t, rec_out = run_vm(wd, 'wrec', work, '^FT-DONE', until_exit=True,
                            rr='record', rrfile=log)
        rr['record'].append(t)
        t, rep_out = run_vm(wd, 'wrep', work, '^FT-DONE', until_exit=True,
                            rr='replay', rrfile=log)
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

#!/usr/bin/env python3
#
# Are this host's cores equally fast?  One process pinned to each core
# runs the same integer loop at the same time and counts its iterations
# per second; printed: each core's rate against the first one's, per
# second and per 10 s window.  A pinned pair (bench_ft.py --pin) puts
# the backup on CPU 1: on a virtual host whose CPU 1 is slower than
# CPU 0, the backup cannot keep up with CPU-bound work whatever replay
# costs (docs/design-logging-channel.md, 2026-12-07).
#
#   python3 tests/bench/bench_cores.py [--seconds N] [--cpus 0,1]
#
# Not a test: nothing is asserted.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import multiprocessing
import os
import statistics
import time


def spin(cpu, seconds, out):
    os.sched_setaffinity(0, {cpu})
    counts = []
    x = 1
    for _ in range(seconds):
        n = 0
        end = time.monotonic() + 1
        while time.monotonic() < end:
            for _ in range(2000):
                x = (x * 6364136223846793005 + 1) & 0xffffffffffffffff
            n += 1
        counts.append(n)
    out.put((cpu, counts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=int, default=30)
    ap.add_argument('--cpus', default='0,1')
    args = ap.parse_args()
    cpus = [int(c) for c in args.cpus.split(',')]
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=spin, args=(c, args.seconds, out))
             for c in cpus]
    for p in procs:
        p.start()
    counts = dict(out.get() for _ in procs)
    for p in procs:
        p.join()
    base = counts[cpus[0]]
    for c in cpus[1:]:
        per_s = [b / a for a, b in zip(base, counts[c])]
        win = [sum(counts[c][i:i + 10]) / sum(base[i:i + 10])
               for i in range(0, len(base) - 9, 10)]
        print(f'CPU {c} / CPU {cpus[0]}: per second min {min(per_s):.4f} '
              f'median {statistics.median(per_s):.4f} '
              f'max {max(per_s):.4f}; per 10 s window '
              + ' '.join(f'{w:.4f}' for w in win))


if __name__ == '__main__':
    main()

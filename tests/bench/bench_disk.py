#!/usr/bin/env python3
#
# Shared-disk figures, protected against unprotected, in one run.  The
# guest's disk workload first does --fsyncs synchronous 4 KiB writes
# (O_DIRECT + fsync, one "FSYNC i" line each), then loops writing
# --mb MiB of a pattern with fsync and reading it back with O_DIRECT.
# The host times the console lines as they appear (wall clock: under
# icount the guest's own clock is not wall time):
#   - fsync latency: the interval between consecutive FSYNC lines (one
#     dd process, one 4 KiB write and its flush, one console line), p50
#     and p99;
#   - sequential write and read throughput: MiB per wall second from one
#     DISK line to the next;
#   - log bandwidth (x-query-ft) while the guest reads back its data.
# The unprotected VM uses the same image type and -icount shift without
# record/replay; the protected pair uses blkreplay ft=on on one shared
# image.  Console lines of the protected primary are themselves held by
# the output rule, which adds about the same delay to every line.
# Not a test: nothing is asserted.
#
#   python3 tests/bench/bench_disk.py [--fsyncs N] [--loops N] [--mb N]
#                                     [--format raw|qcow2]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import os
import re
import subprocess
import sys
import threading
import time

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
from ft_test import QEMU_IMG, Pair, Workdir, guest_args, \
    percentile as pct, plain_drive, shared_drive  # noqa: E402


def watch(con, vm, stop, seen):
    """Record (wall time, line) for every new console line."""
    done = 0
    while not stop.is_set():
        text = con.text().replace('\r', '')
        lines = text.split('\n')[:-1]
        now = time.monotonic()
        for ln in lines[done:]:
            seen.append((now, ln))
        done = len(lines)
        time.sleep(0.002)


def run(protected, a):
    with Workdir('bench_disk') as wd:
        disk = wd.make_disk('disk.img', max(16, a.mb * 2 + 1))
        if a.format != 'raw':
            subprocess.run([QEMU_IMG, 'create', '-q', '-f', a.format, disk,
                            f'{max(16, a.mb * 2 + 1)}M'], check=True)
        append = guest_args(work='disk', disk_loops=a.loops, disk_mb=a.mb,
                            fsyncs=a.fsyncs)
        if protected:
            with Pair(append, workdir=wd, protected=True,
                      primary_args=shared_drive(disk, False, fmt=a.format),
                      backup_args=shared_drive(disk, True,
                                               fmt=a.format)) as pair:
                return measure(pair.primary, pair.pcon, True, a)
        p, pcon = wd.make_vm('plain', append,
                             args=plain_drive(disk, a.format))
        p.launch()
        return measure(p, pcon, False, a)


def measure(p, pcon, protected, a):
    """The figures of VM @p (a protected pair's primary if @protected)
    running the disk workload, its console @pcon."""
    res = {}
    seen, stop = [], threading.Event()
    t = threading.Thread(target=watch, args=(pcon, p, stop, seen))
    t.start()
    bw = []
    deadline = time.monotonic() + 900
    while not re.search(rf'^DISK verify ok loop={a.loops}\b',
                        pcon.text(), re.M):
        if time.monotonic() > deadline:
            raise AssertionError('the disk workload did not finish')
        if protected and any('DISK write ok' in ln for _, ln in seen):
            bw.append(p.cmd('x-query-ft')['bandwidth-mbps'])
        time.sleep(0.5)
    stop.set()
    t.join()
    fs = [t for t, ln in seen if ln.startswith('FSYNC ')]
    res['fsync_ms'] = [(b_ - a_) * 1000 for a_, b_ in zip(fs, fs[1:])]
    marks = [(t, ln) for t, ln in seen
             if ln.startswith(('DISK write ok', 'DISK verify ok'))]
    start = fs[-1] if fs else None
    w, r = [], []
    for t_, ln in marks:
        if start is not None:
            (w if 'write' in ln else r).append(a.mb / (t_ - start))
        start = t_
    res['write_mibs'] = w
    res['read_mibs'] = r
    res['log_mbps'] = max(bw) if bw else None
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--fsyncs', type=int, default=100)
    ap.add_argument('--loops', type=int, default=3)
    ap.add_argument('--mb', type=int, default=8)
    ap.add_argument('--format', choices=('raw', 'qcow2'), default='raw')
    a = ap.parse_args()
    u = run(False, a)
    p = run(True, a)
    print(f'image format: {a.format}')
    print(f'{"figure":34} {"unprotected":>12} {"protected":>12} {"ratio":>7}')
    rows = [('fsync latency p50 ms', pct(u['fsync_ms'], 50),
             pct(p['fsync_ms'], 50)),
            ('fsync latency p99 ms', pct(u['fsync_ms'], 99),
             pct(p['fsync_ms'], 99)),
            ('sequential write MiB/s (median)', pct(u['write_mibs'], 50),
             pct(p['write_mibs'], 50)),
            ('sequential read MiB/s (median)', pct(u['read_mibs'], 50),
             pct(p['read_mibs'], 50))]
    for name, x, y in rows:
        print(f'{name:34} {x:12.2f} {y:12.2f} {y / x:7.2f}')
    print(f'{"log bandwidth, peak Mbit/s":34} {"-":>12} '
          f'{p["log_mbps"] or 0:12.2f}')


if __name__ == '__main__':
    main()

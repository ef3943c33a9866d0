#!/usr/bin/env python3
#
# Logging-channel figures, measured side by side in one run.  For each
# workload (idle, ticker, cpu, disk, network), the same guest runs
#   - unprotected: -icount shift=5, no record/replay, no backup;
#   - protected: a primary (-icount shift=5,rr=record,rrchardev=...)
#     streaming to a live backup (rr=replay) on the same host;
# and the script prints, measured over the same window after FT-READY:
#   - primary speed as a ratio to the unprotected VM, in the work the
#     workload does: guest instructions per wall second (cpu, disk),
#     echoed bytes per second (network), guest clock per wall second
#     (idle, ticker: a guest that mostly sleeps executes so few
#     instructions that their count is the guest's own noise); the
#     instruction and guest-clock ratios are printed for every workload;
#   - backup rate: the backup's instructions (guest clock for idle and
#     ticker) per second as a ratio to the primary's over the window
#     (>= 1.0 means it keeps up);
#   - log bandwidth in Mbit/s;
#   - execution lag, sampled every 100 ms from x-query-ft: p50 and p99 in
#     ms of guest time (primary icount - backup icount, the bound rrlag
#     is in), and in wall ms (how long ago the primary was where the
#     backup is now);
#   - the slowest x-query-ft round trip on either side;
# and, once, x-query-ft on a backup starved of log: its primary is
# SIGSTOPped for 3 s while the backup is asked every 10 ms.
# The unprotected and protected runs alternate for --rounds rounds (in
# turn first), and each figure is the median over the rounds: this host
# is shared and a single run can be off by 10 % or more.
# Not a test: nothing is asserted.  Both VMs share this host's cores, so
# the protected run pays for the backup's CPU too.  With --pin, the
# unprotected VM and the primary run on CPU 0 and the backup on CPU 1
# (taskset), as if the backup had a host of its own.
#
#   python3 tests/bench/bench_ft.py [--seconds N] [--rounds N]
#                                   [--workloads a,b] [--pin]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import os
import signal
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
import ftlib  # noqa: E402
from ftfail import percentile as pct  # noqa: E402

WORKLOADS = {
    'idle': dict(work=''),
    'ticker': dict(work='ticker'),
    'cpu': dict(work='cpu,ticker', cpu_iters=1000000),
    'disk': dict(work='disk,ticker', disk_loops=0, disk_mb=4),
    'network': dict(work='echo,ticker', ip='10.0.2.15/24', gw='10.0.2.2'),
}


class Bench(ftlib.FTTestCase):
    def runTest(self):
        pass


def devices(t, workload, side):
    if workload == 'disk':
        path = t.make_disk(f'{side}.img', 16)
        return ['-drive', f'file={path},if=none,id=d0,format=raw',
                '-drive', 'driver=blkreplay,if=none,image=d0,id=d0-rr',
                '-device', 'ide-hd,drive=d0-rr']
    if workload == 'network':
        fwd = f',hostfwd=tcp:127.0.0.1:{t.echo_port}-:7' \
            if side != 'backup' else ''
        args = ['-netdev', 'user,id=n0' + fwd,
                '-device', 'virtio-net-pci,netdev=n0,romfile=']
        if side != 'plain':
            args += ['-object', 'filter-replay,id=fr0,netdev=n0']
        return args
    return []


def echo_client(port, stop, counter):
    while not stop.is_set():
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
                while not stop.is_set():
                    msg = os.urandom(4096)
                    s.sendall(msg)
                    got = 0
                    while got < len(msg):
                        d = s.recv(65536)
                        if not d:
                            raise OSError('closed')
                        got += len(d)
                    counter[0] += len(msg)
        except OSError:
            time.sleep(0.5)


def replay_info(vm):
    """(monotonic time, icount, guest clock ns)"""
    r = vm.cmd('query-replay')
    return time.monotonic(), r['icount'], r['clock-ns']


# What "speed" means for each workload (see the top of this file)
WORK = {'idle': 'clock', 'ticker': 'clock', 'cpu': 'insns',
        'disk': 'insns', 'network': 'echo'}


def rates(a, b, echoed=0):
    dt = b[0] - a[0]
    return {'insns': (b[1] - a[1]) / dt, 'clock': (b[2] - a[2]) / dt / 1e9,
            'echo': echoed / dt}


def start_client(t, workload, stop):
    counter = [0]
    if workload == 'network':
        threading.Thread(target=echo_client,
                         args=(t.echo_port, stop, counter),
                         daemon=True).start()
        time.sleep(1)
    return counter


def wall_lag(history, t_b, icount_b):
    """How long before @t_b the primary was at @icount_b, from the
    primary's (time, icount) @history (interpolated)."""
    if icount_b >= history[-1][1]:
        return 0.0
    for (t1, i1), (t2, i2) in zip(reversed(history[:-1]),
                                  reversed(history[1:])):
        if i1 < icount_b <= i2:
            at = t1 + (icount_b - i1) / (i2 - i1) * (t2 - t1)
            return max(0.0, t_b - at) * 1000
    return max(0.0, t_b - history[0][0]) * 1000


def run_plain(workload, seconds, cpu0):
    knobs = WORKLOADS[workload]
    t = Bench()
    t.setUp()
    t.echo_port = ftlib.free_tcp_port()
    stop = threading.Event()
    try:
        vm, con = t.make_vm('plain', t.guest_args(**knobs),
                            args=devices(t, workload, 'plain'), wrapper=cpu0)
        vm.launch()
        con.wait(r'FT-READY', 300, vm)
        echoed = start_client(t, workload, stop)
        a, e0 = replay_info(vm), echoed[0]
        time.sleep(seconds)
        b = replay_info(vm)
        return rates(a, b, echoed[0] - e0)
    finally:
        stop.set()
        t._ft_passed = True
        t.tearDown()


def run_pair(workload, seconds, rrx, cpu0, cpu1):
    knobs = WORKLOADS[workload]
    t = Bench()
    t.setUp()
    t.echo_port = ftlib.free_tcp_port()
    stop = threading.Event()
    try:
        p, pcon, b, bcon = t.make_pair(
            t.guest_args(**knobs), rrx=rrx,
            primary_args=devices(t, workload, 'primary'),
            backup_args=devices(t, workload, 'backup'),
            primary_wrapper=cpu0, backup_wrapper=cpu1)
        pcon.wait(r'FT-READY', 300, p)
        echoed = start_client(t, workload, stop)
        pa, ba, e0 = replay_info(p), replay_info(b), echoed[0]
        p0, b0 = t.ft(p)[0], t.ft(b)[0]
        lags, walls, qmp = [], [], []
        history = [(pa[0], pa[1])]
        while time.monotonic() - pa[0] < seconds:
            time.sleep(0.1)
            pi, pt = t.ft(p)
            history.append((time.monotonic(), pi['icount']))
            bi, bt = t.ft(b)
            qmp += [pt, bt]
            lags.append(pi['lag-ms'])
            walls.append(wall_lag(history, time.monotonic(), bi['icount']))
            del history[:-200]
        pb, bb = replay_info(p), replay_info(b)
        p1, b1 = t.ft(p)[0], t.ft(b)[0]
        res = rates(pa, pb, echoed[0] - e0)
        res['backup'] = rates(ba, bb)
        res['mbps'] = (p1['log-acked'] - p0['log-acked']) * 8 / \
            (pb[0] - pa[0]) / 1e6
        res['lag_p50'], res['lag_p99'] = pct(lags, 50), pct(lags, 99)
        res['wall_p50'], res['wall_p99'] = pct(walls, 50), pct(walls, 99)
        res['qmp_max'] = max(qmp)
        res['throttle_ms'] = p1['throttle-ms'] - p0['throttle-ms']
        res['mismatches'] = b1['digest']['mismatches']
        res['state'] = f"{p1['state']}/{b1['state']}"
        return res
    finally:
        stop.set()
        t._ft_passed = True
        t.tearDown()


def starved_qmp(rrx):
    """x-query-ft round trips (ms) on a backup whose primary is
    stopped, so that no log arrives."""
    t = Bench()
    t.setUp()
    try:
        p, pcon, b, bcon = t.make_pair(t.guest_args(work='ticker'),
                                       rrx=rrx + ',rrtimeout=10000')
        pcon.wait(r'TICK 2\b', 300, p)
        os.kill(p.get_pid(), signal.SIGSTOP)
        times = []
        try:
            end = time.monotonic() + 3
            while time.monotonic() < end:
                times.append(t.ft(b)[1])
                time.sleep(0.01)
        finally:
            os.kill(p.get_pid(), signal.SIGCONT)
        return times
    finally:
        t._ft_passed = True
        t.tearDown()


def measure(workload, seconds, rounds, rrx='', pin=False):
    cpu0 = ['taskset', '-c', '0'] if pin else []
    cpu1 = ['taskset', '-c', '1'] if pin else []
    rows = []
    for r in range(rounds):
        if r % 2 == 0:
            plain = run_plain(workload, seconds, cpu0)
            prot = run_pair(workload, seconds, rrx, cpu0, cpu1)
        else:
            prot = run_pair(workload, seconds, rrx, cpu0, cpu1)
            plain = run_plain(workload, seconds, cpu0)
        row = {k: prot[k] / max(plain[k], 1e-9)
               for k in ('insns', 'clock', 'echo')}
        row['speed'] = row[WORK[workload]]
        # the backup echoes nothing: its rate in instructions, or in guest
        # clock where that is the workload's measure
        unit = 'clock' if WORK[workload] == 'clock' else 'insns'
        row['backup'] = prot['backup'][unit] / max(prot[unit], 1e-9)
        for k in ('mbps', 'lag_p50', 'lag_p99', 'wall_p50', 'wall_p99',
                  'qmp_max', 'throttle_ms', 'mismatches'):
            row[k] = prot[k]
        print(workload, f'round {r + 1}:', {'plain': plain, 'protected': prot},
              flush=True)
        rows.append(row)
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    med['mismatches'] = sum(row['mismatches'] for row in rows)
    med['qmp_max'] = max(row['qmp_max'] for row in rows)
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=int, default=20)
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--workloads', default=','.join(WORKLOADS))
    ap.add_argument('--rrx', default='',
                    help='extra -icount options for the pair, e.g. '
                    '",rrlag=5000"')
    ap.add_argument('--pin', action='store_true',
                    help='unprotected VM and primary on CPU 0, backup on '
                    'CPU 1')
    args = ap.parse_args()
    rows = []
    for w in args.workloads.split(','):
        rows.append((w, measure(w, args.seconds, args.rounds, args.rrx,
                                args.pin)))
    starved = starved_qmp(args.rrx)
    print()
    where = ('unprotected VM and primary on CPU 0, backup on CPU 1'
             if args.pin else 'both VMs of the pair on this host')
    print(f'window {args.seconds} s after FT-READY, median of {args.rounds} '
          f'rounds; icount shift=5{args.rrx}; {where}')
    print('| workload | primary / unprotected | (instructions) | '
          '(guest clock) | backup / primary | log Mbit/s | '
          'lag p50 / p99 guest ms | lag p50 / p99 wall ms | '
          'throttled ms | slowest x-query-ft ms | digest mismatches |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for w, r in rows:
        print(f"| {w} | {r['speed']:.3f} ({WORK[w]}) | {r['insns']:.3f} | "
              f"{r['clock']:.3f} | {r['backup']:.3f} | {r['mbps']:.3f} | "
              f"{r['lag_p50']:.1f} / {r['lag_p99']:.1f} | "
              f"{r['wall_p50']:.1f} / {r['wall_p99']:.1f} | "
              f"{r['throttle_ms']:.0f} | {r['qmp_max']:.1f} | "
              f"{r['mismatches']} |")
    print(f'x-query-ft on a starved backup (primary SIGSTOPped, {len(starved)} '
          f'calls in 3 s): p50 {pct(starved, 50):.1f} ms, '
          f'p99 {pct(starved, 99):.1f} ms, max {max(starved):.1f} ms')


if __name__ == '__main__':
    main()

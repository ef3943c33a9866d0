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
#     echoed bytes per second (network: a client streams through the
#     guest's TCP echo server with 64 KiB in flight), guest clock per
#     wall second (idle, ticker: a guest that mostly sleeps executes so
#     few instructions that their count is the guest's own noise); the
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
# This host is shared, and its speed drifts by 10-30 % within minutes, so
# by default the unprotected VM and the pair run at the same time but in
# turn (--interleave S): every S seconds one side is SIGSTOPped and the
# other continued, in the order ABBA ABBA..., and each side's rates are
# summed over its own slices.  Both sides thus sample the host at the
# same moments.  The pair's rrtimeout is raised to 60 s so that a slice
# stopped is not taken for a lost peer.  With --interleave 0 the two run
# one after the other, alternating which goes first.  Either way each
# figure is the median over --rounds rounds.
# Not a test: nothing is asserted.  Both VMs share this host's cores, so
# the protected run pays for the backup's CPU too.  With --pin, the
# unprotected VM and the primary run on CPU 0 and the backup on CPU 1
# (taskset), as if the backup had a host of its own; the network
# workload's client then runs on CPU 0 too, beside the VM measured.
# The two cores of a virtual host need not be equally fast (on this one
# their speeds differed by 1-60 %, and which was slower changed within
# minutes, 2026-12-07; bench_cores.py): --swap puts the backup on CPU 0,
# and the rest on CPU 1, in every odd round.
# With --compare QEMU, every round runs twice, on this build (after) and
# on another qemu-system-x86_64 (before: an older build, say), in
# alternating order, and the two are printed side by side.
#
#   python3 tests/bench/bench_ft.py [--seconds N] [--rounds N]
#                                   [--workloads a,b] [--pin [--swap]]
#                                   [--interleave S] [--rrx ,opt=v]
#                                   [--compare OTHER-QEMU]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import os
import signal
import statistics
import sys
import threading
import time

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
from ft_test import WORKLOADS, Echo, Pair, Workdir, devices, \
    free_tcp_port, percentile as pct, query_ft, \
    query_replay as replay_info  # noqa: E402

# The workloads measured (ft_test.WORKLOADS), and what "speed" means for
# each (see the top of this file)
WORK = {'idle': 'clock', 'ticker': 'clock', 'cpu': 'insns',
        'disk': 'insns', 'network': 'echo'}


def rates(a, b, echoed=0):
    dt = b[0] - a[0]
    return {'insns': (b[1] - a[1]) / dt, 'clock': (b[2] - a[2]) / dt / 1e9,
            'echo': echoed / dt}


class NoClient:
    verified = 0


def start_client(workload, stop, port, cpus=None):
    """For the network workload, stream through the guest's echo server
    with up to 64 KiB in flight, counting the bytes that come back
    (.verified): throughput, not the round trip of one message
    (bench_network.py measures that)."""
    if not WORKLOADS[workload].net:
        return NoClient()
    echo = Echo('127.0.0.1', port, stop=stop.is_set, window=64 * 1024,
                reconnect=True, cpus=cpus, timeout=10)
    echo.start()
    time.sleep(1)
    return echo


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


def sample(p, b, history, now, lags, walls, qmp):
    """One lag sample: x-query-ft on both sides; @now is the time on
    @history's clock."""
    pi, pt = query_ft(p)
    history.append((now(), pi['icount']))
    bi, bt = query_ft(b)
    qmp += [pt, bt]
    lags.append(pi['lag-ms'])
    walls.append(wall_lag(history, now(), bi['icount']))
    del history[:-200]


def summary(res, lags, walls, qmp, p0, p1, b1):
    """The pair's figures besides its rates, into @res."""
    res['lag_p50'], res['lag_p99'] = pct(lags, 50), pct(lags, 99)
    res['wall_p50'], res['wall_p99'] = pct(walls, 50), pct(walls, 99)
    res['qmp_max'] = max(qmp)
    res['throttle_ms'] = p1['throttle-ms'] - p0['throttle-ms']
    res['mismatches'] = b1['digest']['mismatches']
    res['state'] = f"{p1['state']}/{b1['state']}"
    return res


def pair(wd, workload, rrx, cpu0, cpu1, port, qemu=None):
    """A pair running @workload in Workdir @wd, its echo server on host
    @port; not started."""
    return Pair(WORKLOADS[workload].append(), workdir=wd, rrx=rrx, qemu=qemu,
                primary_args=devices(workload, 'primary', wd.make_disk, port),
                backup_args=devices(workload, 'backup', wd.make_disk),
                primary_wrapper=cpu0, backup_wrapper=cpu1)


def run_plain(workload, seconds, cpu0, qemu=None):
    port = free_tcp_port()
    stop = threading.Event()
    try:
        with Workdir('bench_ft') as wd:
            vm, con = wd.make_vm(
                'plain', WORKLOADS[workload].append(),
                args=devices(workload, 'plain', wd.make_disk, port),
                wrapper=cpu0, qemu=qemu)
            vm.launch()
            con.wait(r'FT-READY', 300, vm)
            echo = start_client(workload, stop, port)
            a, e0 = replay_info(vm), echo.verified
            time.sleep(seconds)
            b = replay_info(vm)
            return rates(a, b, echo.verified - e0)
    finally:
        stop.set()


def run_pair(workload, seconds, rrx, cpu0, cpu1, qemu=None):
    port = free_tcp_port()
    stop = threading.Event()
    try:
        with Workdir('bench_ft') as wd, \
                pair(wd, workload, rrx, cpu0, cpu1, port, qemu) as \
                (p, pcon, b, _):
            pcon.wait(r'FT-READY', 300, p)
            echo = start_client(workload, stop, port)
            pa, ba, e0 = replay_info(p), replay_info(b), echo.verified
            p0 = query_ft(p)[0]
            lags, walls, qmp = [], [], []
            history = [(pa[0], pa[1])]
            while time.monotonic() - pa[0] < seconds:
                time.sleep(0.1)
                sample(p, b, history, time.monotonic, lags, walls, qmp)
            pb, bb = replay_info(p), replay_info(b)
            p1, b1 = query_ft(p)[0], query_ft(b)[0]
            res = rates(pa, pb, echo.verified - e0)
            res['backup'] = rates(ba, bb)
            res['mbps'] = (p1['log-acked'] - p0['log-acked']) * 8 / \
                (pb[0] - pa[0]) / 1e6
            return summary(res, lags, walls, qmp, p0, p1, b1)
    finally:
        stop.set()


def run_interleaved(workload, seconds, rrx, cpu0, cpu1, slice_s, qemu=None,
                    client_cpus=None):
    """The unprotected VM and the pair run at the same time, but in
    turn: each slice, one side is SIGSTOPped while the other runs, in the
    order ABBA ABBA ..., so that both see the host's load at the same
    moments.  Returns the same figures as run_plain() and run_pair(),
    summed over each side's slices."""
    plain_port, pair_port = free_tcp_port(), free_tcp_port()
    with Workdir('bench_ft') as wd, \
            pair(wd, workload, rrx + ',rrtimeout=60000', cpu0, cpu1,
                 pair_port, qemu) as (p, pcon, b, bcon):
        stop = threading.Event()
        vms = []
        try:
            vm, con = wd.make_vm(
                'plain', WORKLOADS[workload].append(),
                args=devices(workload, 'plain', wd.make_disk, plain_port),
                wrapper=cpu0, qemu=qemu)
            vm.launch()
            vms.append(vm)
            vms += [p, b]
            con.wait(r'FT-READY', 300, vm)
            pcon.wait(r'FT-READY', 300, p)
            # Pinned, the client shares the primary's core with whichever
            # VM is measured: the same cost to both.  Beside the backup, it
            # would have had a core to itself in the unprotected VM's
            # slices only.
            plain_echo = start_client(workload, stop, plain_port,
                                      client_cpus)
            pair_echo = start_client(workload, stop, pair_port, client_cpus)
            sides = {'plain': [vm], 'pair': [p, b]}
            tot = {k: dict(dt=0.0, insns=0, clock=0, echo=0)
                   for k in ('plain', 'pair', 'backup')}
            lags, walls, qmp = [], [], []
            p0 = query_ft(p)[0]
            acked = 0
            # the pair's own clock, which stands still while it is stopped:
            # wall lag must not count the other side's slices
            off, history = 0.0, []
            first = None
            n = max(1, round(seconds / slice_s))
            order = [('pair', 'plain') if i % 4 in (0, 3)
                     else ('plain', 'pair') for i in range(2 * n)]
            for run_side, stop_side in order:
                for x in sides[stop_side]:
                    os.kill(x.get_pid(), signal.SIGSTOP)
                for x in sides[run_side]:
                    os.kill(x.get_pid(), signal.SIGCONT)
                if run_side == 'plain':
                    a, e0 = replay_info(vm), plain_echo.verified
                    time.sleep(slice_s)
                    z = replay_info(vm)
                    off += time.monotonic() - a[0]
                    add = [('plain', a, z, plain_echo.verified - e0)]
                else:
                    pa, ba = replay_info(p), replay_info(b)
                    e0 = pair_echo.verified
                    k0 = query_ft(p)[0]['log-acked']
                    history.append((pa[0] - off, pa[1]))
                    while time.monotonic() - pa[0] < slice_s:
                        time.sleep(0.1)
                        sample(p, b, history, lambda: time.monotonic() - off,
                               lags, walls, qmp)
                    pz, bz = replay_info(p), replay_info(b)
                    first = first or (pa, ba)
                    last = (pz, bz)
                    acked += query_ft(p)[0]['log-acked'] - k0
                    add = [('pair', pa, pz, pair_echo.verified - e0),
                           ('backup', ba, bz, 0)]
                for k, a, z, e in add:
                    tot[k]['dt'] += z[0] - a[0]
                    tot[k]['insns'] += z[1] - a[1]
                    tot[k]['clock'] += z[2] - a[2]
                    tot[k]['echo'] += e
            for x in vms:
                os.kill(x.get_pid(), signal.SIGCONT)
            p1, b1 = query_ft(p)[0], query_ft(b)[0]

            def rate(k):
                d = tot[k]
                return {'insns': d['insns'] / d['dt'],
                        'clock': d['clock'] / d['dt'] / 1e9,
                        'echo': d['echo'] / d['dt']}
            plain, res = rate('plain'), rate('pair')
            # The backup's progress against the primary's from the first
            # slice to the last, stopped time included: a VM continued after
            # a stop may move its idle clock on before the slice's first
            # sample, and the backup replays that move inside its slice.
            res['backup'] = {
                'insns': res['insns'] * (last[1][1] - first[1][1]) /
                max(last[0][1] - first[0][1], 1),
                'clock': res['clock'] * (last[1][2] - first[1][2]) /
                max(last[0][2] - first[0][2], 1),
                'echo': 0.0}
            res['mbps'] = acked * 8 / tot['pair']['dt'] / 1e6
            return plain, summary(res, lags, walls, qmp, p0, p1, b1)
        finally:
            stop.set()
            for x in vms:
                try:
                    os.kill(x.get_pid(), signal.SIGCONT)
                except (OSError, TypeError):
                    pass


def starved_qmp(rrx):
    """x-query-ft round trips (ms) on a backup whose primary is
    stopped, so that no log arrives."""
    with Pair(WORKLOADS['ticker'].append(),
              rrx=rrx + ',rrtimeout=10000') as (p, pcon, b, bcon):
        pcon.wait(r'TICK 2\b', 300, p)
        os.kill(p.get_pid(), signal.SIGSTOP)
        times = []
        try:
            end = time.monotonic() + 3
            while time.monotonic() < end:
                times.append(query_ft(b)[1])
                time.sleep(0.01)
        finally:
            os.kill(p.get_pid(), signal.SIGCONT)
        return times


def measure(workload, seconds, rounds, rrx='', pin=False, slice_s=0,
            qemu=None, first=0, swap=False):
    """The figures of @workload, median of @rounds rounds; @qemu: another
    build; @first: the number of the first round (alternating order);
    @swap (with @pin): odd rounds put the backup on CPU 0, the rest on
    CPU 1."""
    rows = []
    for r in range(first, first + rounds):
        mine, its = (1, 0) if swap and r % 2 else (0, 1)
        cpu0 = ['taskset', '-c', str(mine)] if pin else []
        cpu1 = ['taskset', '-c', str(its)] if pin else []
        if slice_s:
            plain, prot = run_interleaved(workload, seconds, rrx, cpu0, cpu1,
                                          slice_s, qemu,
                                          {mine} if pin else None)
        elif r % 2 == 0:
            plain = run_plain(workload, seconds, cpu0, qemu)
            prot = run_pair(workload, seconds, rrx, cpu0, cpu1, qemu)
        else:
            prot = run_pair(workload, seconds, rrx, cpu0, cpu1, qemu)
            plain = run_plain(workload, seconds, cpu0, qemu)
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
    return median(rows)


def median(rows):
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    med['mismatches'] = sum(row['mismatches'] for row in rows)
    med['qmp_max'] = max(row['qmp_max'] for row in rows)
    return med


def compare(args):
    """Before (--compare) and after (this build), round by round in
    alternating order, side by side."""
    rows = []
    for w in args.workloads.split(','):
        runs = {'after': [], 'before': []}
        for r in range(args.rounds):
            sides = [('after', None), ('before', args.compare)]
            for side, qemu in sides if r % 2 == 0 else reversed(sides):
                print(w, side, flush=True)
                runs[side].append(measure(w, args.seconds, 1, args.rrx,
                                          args.pin, args.interleave, qemu,
                                          first=r, swap=args.swap))
        rows.append((w, median(runs['before']), median(runs['after'])))
    print()
    print(f'before: {args.compare}; after: this build; window '
          f'{args.seconds} s, median of {args.rounds} rounds each, '
          f'alternating; icount shift=5{args.rrx}')
    print('| workload | primary / unprotected, before -> after | '
          'backup / primary | log Mbit/s | lag p99 guest ms | '
          'throttled ms | digest mismatches |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    for w, b, a in rows:
        print(f"| {w} ({WORK[w]}) | {b['speed']:.3f} -> {a['speed']:.3f} "
              f"({a['speed'] / max(b['speed'], 1e-9):.2f}) | "
              f"{b['backup']:.3f} -> {a['backup']:.3f} | "
              f"{b['mbps']:.2f} -> {a['mbps']:.2f} | "
              f"{b['lag_p99']:.1f} -> {a['lag_p99']:.1f} | "
              f"{b['throttle_ms']:.0f} -> {a['throttle_ms']:.0f} | "
              f"{b['mismatches']} -> {a['mismatches']} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=int, default=20)
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--workloads', default=','.join(WORK))
    ap.add_argument('--rrx', default='',
                    help='extra -icount options for the pair, e.g. '
                    '",rrlag=5000"')
    ap.add_argument('--pin', action='store_true',
                    help='unprotected VM and primary on CPU 0, backup on '
                    'CPU 1')
    ap.add_argument('--swap', action='store_true',
                    help='with --pin: every other round the other way '
                    'round (the two cores need not be equally fast)')
    ap.add_argument('--interleave', type=float, default=2.0, metavar='S',
                    help='run the unprotected VM and the pair at the same '
                    'time, in turn for S-second slices (default 2); 0: '
                    'one after the other')
    ap.add_argument('--compare', metavar='QEMU',
                    help='also run every round on this qemu-system-x86_64 '
                    '(before), and print it beside the build (after)')
    args = ap.parse_args()
    if args.compare:
        compare(args)
        return
    rows = []
    for w in args.workloads.split(','):
        rows.append((w, measure(w, args.seconds, args.rounds, args.rrx,
                                args.pin, args.interleave, swap=args.swap)))
    starved = starved_qmp(args.rrx)
    print()
    where = ('unprotected VM and primary on CPU 0, backup on CPU 1'
             if args.pin else 'both VMs of the pair on this host')
    if args.pin and args.swap:
        where += ', and the other way round in odd rounds'
    how = (f'in turn in {args.interleave:g} s slices' if args.interleave
           else 'one after the other')
    print(f'window {args.seconds} s after FT-READY per side ({how}), median '
          f'of {args.rounds} rounds; icount shift=5{args.rrx}; {where}')
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

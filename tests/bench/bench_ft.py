#!/usr/bin/env python3
#
# Logging-channel figures, measured side by side in one run.  For each
# workload (idle, ticker, cpu, disk, network), the same guest runs
#   - unprotected: -icount shift=5, no record/replay, no backup;
#   - protected: a primary (-icount shift=5,rr=record,rrchardev=...)
#     streaming to a live backup (rr=replay) on the same host;
# and the script prints, measured over the same window after FT-READY:
#   - primary speed: guest instructions per wall second, as a ratio to
#     the unprotected VM;
#   - backup rate: the backup's instructions per second as a ratio to the
#     primary's over the window (>= 1.0 means it keeps up);
#   - log bandwidth in Mbit/s;
#   - execution lag (primary icount - backup icount, from x-query-ft every
#     100 ms) p50 and p99 in ms of guest time.
# Not a test: nothing is asserted.  Both VMs share this host's cores, so
# the protected run pays for the backup's CPU too.  With --pin, the
# unprotected VM and the primary run on CPU 0 and the backup on CPU 1
# (taskset), as if the backup had a host of its own.
#
#   python3 tests/bench/bench_ft.py [--seconds N] [--workloads a,b] [--pin]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import os
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
import ftlib  # noqa: E402

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


def icount(vm):
    return vm.cmd('query-replay')['icount']


def measure(workload, seconds, rrx='', pin=False):
    knobs = WORKLOADS[workload]
    cpu0 = ['taskset', '-c', '0'] if pin else []
    cpu1 = ['taskset', '-c', '1'] if pin else []
    res = {}
    # unprotected
    t = Bench()
    t.setUp()
    t.echo_port = ftlib.free_tcp_port()
    stop = threading.Event()
    try:
        vm, con = t.make_vm('plain', t.guest_args(**knobs),
                            args=devices(t, workload, 'plain'), wrapper=cpu0)
        vm.launch()
        con.wait(r'FT-READY', 300, vm)
        if workload == 'network':
            threading.Thread(target=echo_client,
                             args=(t.echo_port, stop, [0]),
                             daemon=True).start()
        i0, t0 = icount(vm), time.monotonic()
        time.sleep(seconds)
        i1, t1 = icount(vm), time.monotonic()
        res['plain_ips'] = (i1 - i0) / (t1 - t0)
    finally:
        stop.set()
        t._ft_passed = True
        t.tearDown()

    # protected
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
        if workload == 'network':
            threading.Thread(target=echo_client,
                             args=(t.echo_port, stop, [0]),
                             daemon=True).start()
        p0, _ = t.ft(p)
        b0, _ = t.ft(b)
        t0 = time.monotonic()
        lags = []
        while time.monotonic() - t0 < seconds:
            time.sleep(0.1)
            lags.append(t.ft(p)[0]['lag-ms'])
        p1, _ = t.ft(p)
        b1, _ = t.ft(b)
        dt = time.monotonic() - t0
        res['primary_ips'] = (p1['icount'] - p0['icount']) / dt
        res['backup_ips'] = (b1['icount'] - b0['icount']) / dt
        res['mbps'] = (p1['log-acked'] - p0['log-acked']) * 8 / dt / 1e6
        lags.sort()
        res['lag_p50'] = statistics.median(lags)
        res['lag_p99'] = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        res['throttle_ms'] = p1['throttle-ms'] - p0['throttle-ms']
        res['mismatches'] = b1['digest']['mismatches']
        res['state'] = f"{p1['state']}/{b1['state']}"
    finally:
        stop.set()
        t._ft_passed = True
        t.tearDown()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=int, default=30)
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
        r = measure(w, args.seconds, args.rrx, args.pin)
        rows.append((w, r))
        print(w, r, flush=True)
    print()
    where = ('unprotected VM and primary on CPU 0, backup on CPU 1'
             if args.pin else 'both VMs of the pair on this host')
    print(f'window {args.seconds} s after FT-READY; icount shift=5{args.rrx}; '
          f'{where}')
    print('| workload | primary / unprotected | backup / primary | '
          'log Mbit/s | lag p50 ms | lag p99 ms | throttled ms | '
          'digest mismatches |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    for w, r in rows:
        print(f"| {w} | {r['primary_ips'] / r['plain_ips']:.3f} | "
              f"{r['backup_ips'] / max(r['primary_ips'], 1):.3f} | "
              f"{r['mbps']:.3f} | {r['lag_p50']:.1f} | {r['lag_p99']:.1f} | "
              f"{r['throttle_ms']} | {r['mismatches']} |")


if __name__ == '__main__':
    main()

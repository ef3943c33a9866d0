#!/usr/bin/env python3
#
# The icount tax, measured side by side in one run: the same guest doing
# the same finite work under
#   tcg        plain TCG, no -icount
#   shift=N    -icount shift=N, for each N of --shifts (5 is what the
#              pair runs with)
#   auto       -icount shift=auto
#   record     -icount shift=5,rr=record to a file, its disk behind
#              blkreplay and its network behind filter-replay
#   protected  a primary streaming to a live backup on this host (the
#              backup takes the other core), at shift=5
#   record@S, protected@S   the same at shift=S (a number or auto)
# on the workloads
#   boot       launch to FT-READY (every run)
#   cpu        the guest's sha256 chain (ft.cpu_iters), CPU start to
#              CPU result
#   disk       ft.disk_mb MiB written and read back ft.disk_loops times
#              (AHCI, O_DIRECT in the guest), DISK dev= to DISK done
#   net        --net-mib MiB echoed by the guest's TCP echo server over
#              slirp (virtio-net), 64 KiB in flight
# Each figure is the wall time of the same work, seen from the host (the
# console is polled every 20 ms); printed as medians over --rounds
# rounds, and as the speed relative to plain TCG (its time / this
# configuration's time: 1.00 is no tax).  Within a round the
# configurations run one after the other, in an order rotated each
# round, so that drift of this shared host hits them alike.
# Not a test: nothing is asserted.  --json FILE writes every sample.
#
#   python3 tests/bench/bench_icount.py [--rounds N] [--shifts 0,3,5,7]
#       [--configs tcg,shift=5,...] [--workloads cpu,disk,net]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import json
import os
import re
import statistics
import sys
import threading
import time

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
from ft_test import Echo, Pair, Workdir, devices, free_tcp_port  # noqa: E402
from ft_test.workloads import USER_NET, guest_args  # noqa: E402

# What each workload runs in the guest, the devices it needs (the
# WORKLOADS entry of ft_test whose devices() it takes), and the console
# lines that start and end the work timed
WORK = {
    'cpu': (dict(work='cpu', cpu_iters=200), 'idle', r'^CPU start',
            r'^CPU result'),
    'disk': (dict(work='disk', disk_mb=8, disk_loops=4), 'disk',
             r'^DISK dev=', r'^DISK done'),
    'net': (dict(work='echo', **USER_NET), 'network', None, None),
}


class Watch(threading.Thread):
    """The host time at which each of @patterns first appears on
    console @con."""

    def __init__(self, con, patterns):
        super().__init__(daemon=True)
        self.con = con
        self.todo = {p: re.compile(p, re.M) for p in patterns if p}
        self.seen = {}
        self.halt = threading.Event()

    def run(self):
        while self.todo and not self.halt.is_set():
            text = self.con.text().replace('\r', '')
            now = time.monotonic()
            for p, rx in list(self.todo.items()):
                if rx.search(text):
                    self.seen[p] = now
                    del self.todo[p]
            time.sleep(0.02)

    def wait(self, pattern, timeout, vm):
        deadline = time.monotonic() + timeout
        while pattern not in self.seen:
            if not vm.is_running():
                raise RuntimeError(f'QEMU exited before {pattern!r}: '
                                   f'{vm.get_log()}')
            if time.monotonic() > deadline:
                raise RuntimeError(f'no {pattern!r} in {timeout} s: '
                                   f'{self.con.text()[-500:]!r}')
            time.sleep(0.02)
        return self.seen[pattern]


def icount_of(config):
    """make_vm()'s shift and extra -icount options for @config."""
    if config == 'tcg':
        return dict(shift=None)
    if config == 'auto':
        return dict(shift='auto')
    if config.startswith('shift='):
        return dict(shift=int(config[6:]))
    raise ValueError(config)


def measure(vm, con, t0, workload, port, net_bytes):
    """Boot and work seconds of one VM launched at @t0."""
    knobs, _, start, end = WORK[workload]
    w = Watch(con, ['^FT-READY', start, end])
    w.start()
    try:
        ready = w.wait('^FT-READY', 300, vm)
        if workload == 'net':
            echo = Echo('127.0.0.1', port, nbytes=net_bytes,
                        window=64 * 1024, timeout=30)
            t1 = time.monotonic()
            echo.run()
            if echo.error:
                raise RuntimeError(f'echo: {echo.error}')
            return ready - t0, time.monotonic() - t1
        t1 = w.wait(start, 60, vm)
        return ready - t0, w.wait(end, 900, vm) - t1
    finally:
        w.halt.set()


def run_one(config, workload, net_bytes):
    knobs, dev, _, _ = WORK[workload]
    append = guest_args(**knobs)
    port = free_tcp_port()
    config, _, shift = config.partition('@')
    shift = shift or 5
    with Workdir('bench_icount') as wd:
        if config == 'protected':
            pair = Pair(append, workdir=wd, shift=shift,
                        primary_args=devices(dev, 'primary', wd.make_disk,
                                             port),
                        backup_args=devices(dev, 'backup', wd.make_disk))
            t0 = time.monotonic()
            with pair as (p, pcon, _, _):
                return measure(p, pcon, t0, workload, port, net_bytes)
        if config == 'record':
            vm, con = wd.make_vm('vm', append, rr='record', shift=shift,
                                 rrfile=wd.scratch('rr.log'),
                                 args=devices(dev, 'primary', wd.make_disk,
                                              port))
        else:
            vm, con = wd.make_vm('vm', append, **icount_of(config),
                                 args=devices(dev, 'plain', wd.make_disk,
                                              port))
        t0 = time.monotonic()
        vm.launch()
        return measure(vm, con, t0, workload, port, net_bytes)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--shifts', default='0,3,5,7')
    ap.add_argument('--configs', default=None,
                    help='comma list (default: tcg, each shift, auto, '
                    'record, protected)')
    ap.add_argument('--workloads', default='cpu,disk,net')
    ap.add_argument('--net-mib', type=int, default=32)
    ap.add_argument('--json', default=None)
    args = ap.parse_args()
    configs = args.configs.split(',') if args.configs else \
        ['tcg'] + [f'shift={n}' for n in args.shifts.split(',')] + \
        ['auto', 'record', 'protected']
    workloads = args.workloads.split(',')
    # samples[(config, workload)] = {'boot': [...], 'work': [...]}
    samples = {(c, w): {'boot': [], 'work': []}
               for c in configs for w in workloads}
    for r in range(args.rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for w in workloads:
            for c in order:
                boot, work = run_one(c, w, args.net_mib << 20)
                samples[(c, w)]['boot'].append(boot)
                samples[(c, w)]['work'].append(work)
                print(f'round {r + 1} {w:4} {c:9}: boot {boot:6.2f} s, '
                      f'work {work:6.2f} s', flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({f'{c}/{w}': v for (c, w), v in samples.items()}, f,
                      indent=1)
    med = {k: {m: statistics.median(v) for m, v in s.items()}
           for k, s in samples.items()}
    base = 'tcg' if 'tcg' in configs else configs[0]
    print()
    print(f'Wall seconds (median of {args.rounds}) and speed relative to '
          f'{base} (its time / this time)')
    print()
    head = '| configuration | boot s | boot speed |'
    line = '|---|---:|---:|'
    for w in workloads:
        head += f' {w} s | {w} speed |'
        line += '---:|---:|'
    print(head)
    print(line)
    for c in configs:
        boot = statistics.median(
            [med[(c, w)]['boot'] for w in workloads])
        base_boot = statistics.median(
            [med[(base, w)]['boot'] for w in workloads])
        row = f'| {c} | {boot:.2f} | {base_boot / boot:.2f} |'
        for w in workloads:
            t = med[(c, w)]['work']
            row += f' {t:.2f} | {med[(base, w)]["work"] / t:.2f} |'
        print(row)


if __name__ == '__main__':
    main()

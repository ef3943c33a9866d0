#!/usr/bin/env python3
#
# Where the output rule's time goes, stage by stage, from QEMU's own trace
# points (ft/trace-events, the "log" trace backend with -msg timestamp=on:
# both processes stamp with the host's wall clock).  For every output the
# primary holds (a console write, a packet, a disk write or flush), joined
# by its log offset:
#   hold     the output is held, tagged with the log written so far
#   commit   the vCPU's slice ended and the log up to the tag reached the
#            channel's buffer (ft_out_commit)
#   sent     the primary's sender sent the frame that carries it
#   recv     the backup's receiver has it
#   ack      the backup sends its ACK for it
#   acked    the primary's receiver has the ACK
#   release  the main loop lets the output out (a disk write then goes to
#            the host's storage: that time is the host's, not ours)
# Each of three pairs runs one kind of output on its own: the console
# (the guest's ticker), packets (the guest's TCP echo server on a bridged
# tap, 64-byte messages from a client in its own namespace), and the disk
# (synchronous 4 KiB writes with fsync on the shared disk).  Prints p50
# and p99 of each stage's time and of the total, in microseconds.
# With --compare QEMU, each kind also runs on another qemu-system-x86_64
# (built with the same trace points), in the order this, other, other,
# this, and both are printed: before and after a change, in one run.
# Not a test: nothing is asserted.  --json FILE writes every sample.
#
#   python3 tests/bench/bench_output_path.py [--seconds S] [--fsyncs N]
#                                            [--compare OTHER-QEMU]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import bisect
import json
import os
import re
import sys
import tempfile
import time

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
from ft_test import BridgeNet, Pair, Workdir, guest_args, \
    percentile as pct, shared_drive  # noqa: E402

STAGES = ('commit', 'sent', 'recv', 'ack', 'acked', 'release')
# trace event -> stage whose time it gives (by the offset it carries)
EVENTS = {'ft_out_commit': 'commit', 'ft_out_sent': 'sent',
          'ft_in_data': 'recv', 'ft_in_ack': 'ack',
          'ft_out_acked': 'acked', 'ft_out_released': 'release'}
LINE = re.compile(r'^\d+@(\d+\.\d+):(ft_\w+) (.*)$')
NUMS = re.compile(r'\d+')


def trace_args(path, events):
    # QEMU flushes its log file after every line: on tmpfs, so that a
    # slow disk does not stall the threads being measured
    return ['-trace', f'enable={events}', '-D', path, '-msg', 'timestamp=on']


def parse(paths):
    """The holds [(t, kind, tag)] and, per stage, the times and offsets
    [(t, offset)] in the order logged, from the trace files @paths."""
    holds, stages = [], {s: [] for s in STAGES}
    for path in paths:
        with open(path, errors='replace') as f:
            for ln in f:
                m = LINE.match(ln)
                if not m:
                    continue
                t, ev, rest = float(m.group(1)), m.group(2), m.group(3)
                if ev == 'ft_out_hold':
                    kind, tag = rest.split()[0], int(NUMS.findall(rest)[0])
                    holds.append((t, kind, tag))
                elif ev in EVENTS:
                    stages[EVENTS[ev]].append((t, int(NUMS.findall(rest)[0])))
    return holds, stages


def breakdown(holds, stages, kinds):
    """Per hold of one of @kinds: the time of each stage since the one
    before it, in microseconds (None when the trace ends first)."""
    index = {}
    for s, evs in stages.items():
        # offsets only grow within one stream; keep the running maximum
        # so that bisect finds the first event that covers a tag
        top, ts, offs = 0, [], []
        for t, off in evs:
            top = max(top, off)
            ts.append(t)
            offs.append(top)
        index[s] = (ts, offs)
    out = []
    for t0, kind, tag in holds:
        if kind not in kinds:
            continue
        row, prev = {}, t0
        for s in STAGES:
            ts, offs = index[s]
            i = bisect.bisect_left(offs, tag)
            # The first event of the stage that covers the tag, not before
            # the hold.  Not "at or after the previous stage": the two
            # processes stamp their lines independently, and a backup's
            # recv line can precede the primary's sent line by tens of us;
            # skipping to the next event then pushed every later stage,
            # and the release, to the next output a second later.
            while i < len(ts) and ts[i] < t0 - 1e-3:
                i += 1
            if i == len(ts):
                row = None
                break
            row[s] = max(0.0, (ts[i] - prev) * 1e6)
            prev = max(prev, ts[i])
        if row:
            row['total'] = (prev - t0) * 1e6
            out.append(row)
    return out


def run_pair(name, append, extra_p, extra_b, work, qemu=None):
    """A protected pair of @append with the trace points on (on QEMU
    binary @qemu, or this build's); @work(pair) drives it.  Returns the
    parsed traces."""
    with Workdir(f'bench_output_path_{name}') as wd, \
            tempfile.TemporaryDirectory(dir='/dev/shm') as tmp:
        tp = os.path.join(tmp, 'primary.trace')
        tb = os.path.join(tmp, 'backup.trace')
        pair = Pair(append, workdir=wd, protected=True, qemu=qemu,
                    primary_args=extra_p + trace_args(tp, 'ft_out_*'),
                    backup_args=extra_b + trace_args(tb, 'ft_in_*'))
        with pair:
            pair.pcon.wait(r'FT-READY', 180, pair.primary)
            work(pair)
        return parse([tp, tb])


def console(a, qemu):
    def work(pair):
        time.sleep(a.seconds)
    return breakdown(*run_pair('console', guest_args(work='ticker'), [], [],
                               work, qemu), {'console'}), None


def packets(a, qemu):
    with BridgeNet(os.getpid() % 1000) as net:
        def work(pair):
            work.rtt = net.measure('rtt', a.seconds)
        res = run_pair('packet', guest_args(ip=net.GUEST_IP + '/24',
                                            work='echo'),
                       net.nic_args(0), net.nic_args(1), work, qemu)
        return breakdown(*res, {'packet'}), work.rtt


def disk(a, qemu):
    with Workdir('bench_output_path_img') as wd:
        img = wd.make_disk('shared.img', 16)

        def work(pair):
            deadline = time.monotonic() + 600
            while not re.search(r'^DISK (verify ok|done)', pair.pcon.text(),
                                re.M):
                if time.monotonic() > deadline:
                    raise RuntimeError('the disk workload did not finish')
                time.sleep(0.5)
        return breakdown(*run_pair('disk', guest_args(
            work='disk', disk_loops=1, disk_mb=1, fsyncs=a.fsyncs),
            shared_drive(img, False), shared_drive(img, True), work, qemu),
            {'write'}), None


def table(rows, rtts):
    print(f'{"output":8} {"n":>6} ' +
          ' '.join(f'{s:>13}' for s in (*STAGES, 'total')))
    print(f'{"":15} ' + ' '.join(f'{"p50/p99 us":>13}' for _ in
                                 (*STAGES, 'total')))
    for kind, rs in rows.items():
        cells = []
        for s in (*STAGES, 'total'):
            v = [r[s] for r in rs]
            cells.append(f'{pct(v, 50):6.0f}/{pct(v, 99):<6.0f}' if v
                         else f'{"-":>13}')
        print(f'{kind:8} {len(rs):6} ' + ' '.join(cells))
    for rtt in rtts:
        print(f'echo RTT seen by the client: p50 {rtt["rtt_p50_ms"]:.3f} '
              f'ms, p99 {rtt["rtt_p99_ms"]:.3f} ms')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=float, default=10)
    ap.add_argument('--fsyncs', type=int, default=200)
    ap.add_argument('--compare', metavar='QEMU', default=None)
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    order = [('this build', None)]
    if a.compare:
        order = [('this build', None), (a.compare, a.compare),
                 (a.compare, a.compare), ('this build', None)]
    res = {}
    for kind, fn in (('console', console), ('packet', packets),
                     ('disk', disk)):
        for name, qemu in order:
            rows, rtt = fn(a, qemu)
            r = res.setdefault(name, {'rows': {}, 'rtt': []})
            r['rows'].setdefault(kind, []).extend(rows)
            if rtt:
                r['rtt'].append(rtt)
    for name, r in res.items():
        print(f'\n{name}:')
        table(r['rows'], r['rtt'])
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(res, f)


if __name__ == '__main__':
    main()

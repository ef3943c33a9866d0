#!/usr/bin/env python3
#
# The whole benchmark set in one command, written as a report directory:
#   summary.md    tables: every figure of issue 17 for the protected pair
#                 against the same VM unprotected (and against plain TCG
#                 for the icount tax), each ratio from runs side by side
#   *.png         lag and log bandwidth over time; latency CDFs of the
#                 echo round trip, fsync and the output rule's hold
#   results.json  every sample, from which --render-only redraws it all
# The parts, each measured by the benchmark script named (see its head):
#   speed     bench_ft: primary speed against unprotected, backup rate,
#             lag, throttled time, per workload (interleaved, ABBA)
#   tax       bench_icount: plain TCG, -icount shift=5, the pair
#   network   bench_network: echo RTT, receive and transmit throughput
#   disk      bench_disk: fsync latency, sequential write and read
#   failover  kill -9 of the primary to the backup live (ft_test.failover)
#   output    bench_output_path: the output rule's hold, per kind
#   series    one pair under CPU load sampled every 100 ms: lag, log
#             bandwidth, and each QEMU's memory against an unprotected VM
#   colo      bench_colo: the pair against QEMU's own COLO on the same
#             guest and network, and each against its unprotected VM
#             (plain TCG for COLO, -icount shift=5 for ours): speed, RTT,
#             throughput, memory, kill -9 to live and TCP connections
#             kept; skipped (and said so) without the COLO build
#             (scripts/build-qemu.sh --colo)
# Not a test: nothing is asserted.  --quick runs every part shortly (a
# few minutes, 8 with COLO); the default takes about 40 minutes on a
# 2-core host, 18 of them for COLO.
#
#   python3 tests/bench/report.py --out DIR [--quick] [--parts a,b,...]
#   python3 tests/bench/report.py --out DIR --render-only
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(HERE, '..', 'functional'))
from ft_test import WORKLOADS, Pair, Workdir, percentile as pct  # noqa: E402
from ft_test import rss_kib  # noqa: E402

PARTS = ('speed', 'tax', 'network', 'disk', 'failover', 'output', 'series',
         'colo')
COLO_CONFIGS = ('tcg', 'icount', 'ft', 'colo', 'colo:1000')


# -- measuring ---------------------------------------------------------------

def part_speed(q):
    import bench_ft
    out = {}
    for w in ('idle', 'cpu', 'disk', 'network'):
        out[w] = bench_ft.measure(w, q['speed_s'], q['rounds'], slice_s=2.0)
        out[w]['seconds'] = q['speed_s']
    return out


def part_tax(q):
    import bench_icount
    configs = ('tcg', 'shift=5', 'protected')
    samples = {c: {} for c in configs}
    for r in range(q['rounds']):
        for w in ('cpu', 'disk', 'net'):
            order = configs[r % 3:] + configs[:r % 3]
            for c in order:
                boot, work = bench_icount.run_one(c, w, q['net_mib'] << 20)
                samples[c].setdefault('boot', []).append(boot)
                samples[c].setdefault(w, []).append(work)
    return samples


def part_network(q):
    import bench_network
    runs = {'unprotected': [], 'protected': []}
    for r in range(q['rounds']):
        for prot in ((False, True) if r % 2 == 0 else (True, False)):
            res = bench_network.run(prot, q['net_s'])
            runs['protected' if prot else 'unprotected'].append(res)
    return runs


def part_disk(q):
    import bench_disk
    a = types.SimpleNamespace(fsyncs=q['fsyncs'], loops=q['disk_loops'],
                              mb=8, format='raw')
    return {'unprotected': bench_disk.run(False, a),
            'protected': bench_disk.run(True, a)}


def part_failover(q):
    from ft_test.failover import kill_primary_trial, trial_append
    trials = []
    for i in range(q['kills']):
        pair = Pair(trial_append('ticker'), protected=True)
        with pair:
            r = kill_primary_trial(pair, 'ticker', 1.0 + i % 3)
        trials.append(r)
    return trials


def part_output(q):
    import bench_output_path as bop
    a = types.SimpleNamespace(seconds=q['output_s'], fsyncs=q['fsyncs'])
    res = {}
    for kind, fn in (('console', bop.console), ('packet', bop.packets),
                     ('disk', bop.disk)):
        rows, _ = fn(a, None)
        res[kind] = [r['total'] for r in rows]
    return res


def part_series(q):
    """A pair running the CPU workload, sampled every 100 ms; then an
    unprotected VM of the same guest for its memory."""
    import bench_ft
    w = WORKLOADS['cpu']
    out = {'t': [], 'lag_ms': [], 'wall_lag_ms': [], 'mbps': [],
           'throttle_ms': []}
    with Workdir('report_series') as wd:
        with Pair(w.append(), workdir=wd) as pair:
            p, b = pair.primary, pair.backup
            pair.pcon.wait(r'FT-READY', 180, p)
            t0 = time.monotonic()
            history, lags, walls, qmp = [], [], [], []
            while time.monotonic() - t0 < q['series_s']:
                now = time.monotonic() - t0
                bench_ft.sample(p, b, history, lambda: time.monotonic(),
                                lags, walls, qmp)
                info = p.cmd('x-query-ft')
                out['t'].append(round(now, 3))
                out['lag_ms'].append(lags[-1])
                out['wall_lag_ms'].append(walls[-1])
                out['mbps'].append(info['bandwidth-mbps'])
                out['throttle_ms'].append(info.get('throttle-ms', 0))
                time.sleep(0.1)
            out['rss_primary_kib'] = rss_kib(p.get_pid())
            out['rss_backup_kib'] = rss_kib(b.get_pid())
        vm, con = wd.make_vm('plain', w.append())
        vm.launch()
        con.wait(r'FT-READY', 180, vm)
        time.sleep(min(10, q['series_s']))
        out['rss_unprotected_kib'] = rss_kib(vm.get_pid())
        vm.shutdown()
    return out


def part_colo(q):
    import bench_colo
    if not os.path.exists(bench_colo.COLO_QEMU):
        return {'skipped': f'{bench_colo.COLO_QEMU} is not built '
                '(scripts/build-qemu.sh --colo)'}
    disk = types.SimpleNamespace(fsyncs=q['fsyncs'], loops=q['disk_loops'],
                                 mb=8)
    return bench_colo.measure(list(COLO_CONFIGS), q['rounds'], q['net_s'],
                              q['colo_cpu_iters'], q['colo_failovers'],
                              log=lambda m: print(m, flush=True), disk=disk)


QUICK = dict(rounds=1, speed_s=6, net_mib=8, net_s=3, fsyncs=40,
             disk_loops=1, kills=2, output_s=4, series_s=10,
             colo_cpu_iters=100, colo_failovers=1)
FULL = dict(rounds=3, speed_s=20, net_mib=32, net_s=10, fsyncs=150,
            disk_loops=3, kills=5, output_s=10, series_s=30,
            colo_cpu_iters=400, colo_failovers=3)


# -- rendering ---------------------------------------------------------------

def cdf_png(plt, path, series, xlabel, log):
    """A CDF per (label, samples) of @series, drawn into PNG @path."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, samples in series:
        v = sorted(samples)
        n = len(v)
        if n:
            ax.plot(v, [(i + 1) / n for i in range(n)],
                    label=f'{label} (n={n})')
    if log:
        ax.set_xscale('log')
    ax.set_xlabel(xlabel)
    ax.set_ylabel('fraction')
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def med(v):
    return statistics.median(v) if v else float('nan')


def fmt(x, nd=2):
    return '-' if x is None or x != x else f'{x:.{nd}f}'


def render(res, out):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    md = [f'# Benchmark report, {res["meta"]["date"]}', '',
          f'Host: {res["meta"]["host"]}, {res["meta"]["cpus"]} CPUs; '
          f'mode: {res["meta"]["mode"]}.  Every ratio below compares runs '
          'made side by side in this one run.', '']
    pngs = []

    sp = res.get('speed')
    if sp:
        md += ['## The pair against the same VM unprotected', '',
               '| workload | primary speed | backup / primary | log Mbit/s '
               '| lag p50 / p99 guest ms | lag p50 / p99 wall ms '
               '| throttled |',
               '|---|---:|---:|---:|---:|---:|---:|']
        for w, r in sp.items():
            thr = r['throttle_ms'] / (r['seconds'] * 10)
            md.append(f'| {w} | {fmt(r["speed"])} | {fmt(r["backup"], 3)} '
                      f'| {fmt(r["mbps"], 1)} | {fmt(r["lag_p50"], 1)} / '
                      f'{fmt(r["lag_p99"], 1)} | {fmt(r["wall_p50"], 1)} / '
                      f'{fmt(r["wall_p99"], 1)} | {fmt(thr, 2)} % |')
        md.append('')

    tax = res.get('tax')
    if tax:
        works = ('boot', 'cpu', 'disk', 'net')
        md += ['## The icount tax: speed against plain TCG', '',
               '| configuration | ' + ' | '.join(works) + ' |',
               '|---|' + '---:|' * len(works)]
        for c, s in tax.items():
            cells = [fmt(med(tax['tcg'].get(w, [])) / med(s.get(w, [])))
                     if s.get(w) else '-' for w in works]
            md.append(f'| {c} | ' + ' | '.join(cells) + ' |')
        md.append('')

    net = res.get('network')
    if net:
        def agg(side, key, fig):
            return med([r[key][fig] for r in net[side]])
        md += ['## Network (bridged tap, client in its own namespace)', '',
               '| figure | unprotected | protected | ratio |',
               '|---|---:|---:|---:|']
        for label, key, fig in (('echo RTT p50 ms', 'rtt', 'rtt_p50_ms'),
                                ('echo RTT p99 ms', 'rtt', 'rtt_p99_ms'),
                                ('receive Mbit/s', 'rx', 'mbps'),
                                ('transmit Mbit/s', 'tx', 'mbps')):
            u, p = agg('unprotected', key, fig), agg('protected', key, fig)
            md.append(f'| {label} | {fmt(u, 3)} | {fmt(p, 3)} '
                      f'| {fmt(p / u)} |')
        md.append('')
        cdf_png(plt, os.path.join(out, 'rtt_cdf.png'),
                [(side, [x for r in net[side]
                         for x in r['rtt'].get('rtts_ms', [])])
                 for side in ('unprotected', 'protected')],
                'echo round trip, ms (64-byte messages)', True)
        pngs.append(('Echo round trip, CDF', 'rtt_cdf.png'))

    dk = res.get('disk')
    if dk:
        u, p = dk['unprotected'], dk['protected']
        md += ['## Shared disk', '', '| figure | unprotected | protected '
               '| ratio |', '|---|---:|---:|---:|']
        for label, a, b in (
                ('fsync p50 ms', pct(u['fsync_ms'], 50),
                 pct(p['fsync_ms'], 50)),
                ('fsync p99 ms', pct(u['fsync_ms'], 99),
                 pct(p['fsync_ms'], 99)),
                ('sequential write MiB/s', med(u['write_mibs']),
                 med(p['write_mibs'])),
                ('sequential read MiB/s', med(u['read_mibs']),
                 med(p['read_mibs']))):
            md.append(f'| {label} | {fmt(a)} | {fmt(b)} | {fmt(b / a)} |')
        md.append('')
        cdf_png(plt, os.path.join(out, 'fsync_cdf.png'),
                [('unprotected', u['fsync_ms']),
                 ('protected', p['fsync_ms'])],
                '4 KiB write + fsync, ms (guest, seen on the console)',
                False)
        pngs.append(('fsync latency, CDF', 'fsync_cdf.png'))

    fo = res.get('failover')
    if fo:
        tot = [t['total_ms'] for t in fo]
        det = [t['detect_ms'] for t in fo]
        md += ['## Failover (kill -9 of the primary)', '',
               f'{len(fo)} trials: fault to live p50 {fmt(pct(tot, 50), 1)} '
               f'ms, p99 {fmt(pct(tot, 99), 1)} ms, max {fmt(max(tot), 1)} '
               f'ms; detection p50 {fmt(pct(det, 50), 1)} ms.', '']

    op = res.get('output')
    if op:
        md += ['## The output rule: how long output is held (trace points)',
               '', '| output | n | p50 ms | p99 ms |', '|---|---:|---:|---:|']
        held = [(kind, [x / 1000 for x in v]) for kind, v in op.items()]
        for kind, ms in held:
            md.append(f'| {kind} | {len(ms)} | {fmt(pct(ms, 50), 3)} '
                      f'| {fmt(pct(ms, 99), 3)} |')
        md.append('')
        cdf_png(plt, os.path.join(out, 'hold_cdf.png'), held,
                'held by the output rule, ms (unprotected: 0)', True)
        pngs.append(('Output held, CDF (console, packets, disk)',
                     'hold_cdf.png'))

    se = res.get('series')
    if se:
        md += ['## Under CPU load, over time', '',
               f'Lag p50 / p99: {fmt(pct(se["lag_ms"], 50), 1)} / '
               f'{fmt(pct(se["lag_ms"], 99), 1)} guest ms, '
               f'{fmt(pct(se["wall_lag_ms"], 50), 1)} / '
               f'{fmt(pct(se["wall_lag_ms"], 99), 1)} wall ms.  '
               f'Resident memory: primary '
               f'{se["rss_primary_kib"] >> 10} MiB, backup '
               f'{se["rss_backup_kib"] >> 10} MiB, the same VM unprotected '
               f'{se["rss_unprotected_kib"] >> 10} MiB.', '']
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        a1.plot(se['t'], se['lag_ms'], label='guest ms')
        a1.plot(se['t'], se['wall_lag_ms'], label='wall ms')
        a1.set_ylabel('backup lag')
        a1.legend()
        a1.grid(True, alpha=0.3)
        a2.plot(se['t'], se['mbps'], color='tab:green')
        a2.set_ylabel('log Mbit/s')
        a2.set_xlabel('seconds')
        a2.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out, 'lag_bandwidth.png'), dpi=100)
        plt.close(fig)
        pngs.append(('Lag and log bandwidth over time (CPU load)',
                     'lag_bandwidth.png'))

    co = res.get('colo')
    if co:
        md += render_colo(plt, co, out, pngs)

    if pngs:
        md += ['## Plots', '']
        for title, f in pngs:
            md += [f'### {title}', '', f'![{title}]({f})', '']
    with open(os.path.join(out, 'summary.md'), 'w') as f:
        f.write('\n'.join(md) + '\n')


def render_colo(plt, co, out, pngs):
    """The COLO part's section: figures per configuration, ratios, and
    an RTT CDF of each configuration (appended to @pngs)."""
    import bench_colo
    md = ["## Our pair and QEMU's COLO, side by side", '']
    if 'skipped' in co:
        return md + [f'Not measured: {co["skipped"]}.', '']
    configs = [c for c in co if co[c].get('net') or co[c].get('cpu')]
    s = bench_colo.summary(co, configs)
    md += ['tcg and icount: the guest unprotected on plain TCG and at '
           '-icount shift=5; ft: our pair; colo: QEMU\'s COLO (plain TCG), '
           'colo:MS with a checkpoint every MS ms.  Medians of the rounds; '
           'kill -9 to live for COLO issues its failover commands at once '
           '(it has no heartbeat).', '',
           '| figure | ' + ' | '.join(configs) + ' |',
           '|---|' + '---:|' * len(configs)]
    for label, k, nd in (('launch to ready, s', 'boot_s', 2),
                         ('CPU job, s', 'cpu_s', 2),
                         ('echo RTT p50 ms', 'rtt_p50_ms', 3),
                         ('echo RTT p99 ms', 'rtt_p99_ms', 3),
                         ('receive Mbit/s', 'rx_mbps', 0),
                         ('transmit Mbit/s', 'tx_mbps', 0),
                         ('fsync p50 ms', 'fsync_p50_ms', 2),
                         ('fsync p99 ms', 'fsync_p99_ms', 2),
                         ('sequential write MiB/s', 'write_mibs', 2),
                         ('sequential read MiB/s', 'read_mibs', 2),
                         ('memory, primary MiB', 'rss_primary_mib', 0),
                         ('memory, backup MiB', 'rss_backup_mib', 0),
                         ('kill -9 to live p50 ms', 'live_ms', 1),
                         ('checkpoints, network run', 'checkpoints_net', 0),
                         ('checkpoints, CPU run', 'checkpoints_cpu', 0),
                         ('checkpoints, disk run', 'checkpoints_disk', 0),
                         ('checkpoint pause p50 ms', 'pause_p50_ms', 1),
                         ('checkpoint pause p99 ms', 'pause_p99_ms', 1)):
        md.append(f'| {label} | ' + ' | '.join(
            fmt(s[c].get(k), nd) for c in configs) + ' |')
    md.append('| TCP connections kept at failover | ' + ' | '.join(
        f'{s[c]["conns_kept"][0]} of {s[c]["conns_kept"][1]}'
        if 'conns_kept' in s[c] else '-' for c in configs) + ' |')
    md.append("| COLO: secondary's disk matching the primary's | " +
              ' | '.join(f'{s[c]["disk_replicated"][0]} of '
                         f'{s[c]["disk_replicated"][1]}'
                         if s[c].get('disk_replicated', (0, 0))[1]
                         else '-'
                         for c in configs) + ' |')
    md.append('| runs failed | ' + ' | '.join(
        str(s[c]['errors']) for c in configs) + ' |')
    rs = bench_colo.ratios(s, configs)
    for head, keys in (('CPU speed | RTT p50 | RTT p99 | receive | transmit',
                        bench_colo.NET_RATIOS),
                       ('fsync p50 | fsync p99 | write | read',
                        bench_colo.DISK_RATIOS)):
        md += ['', f'| protected / its unprotected VM | {head} |',
               '|---|' + '---:|' * len(keys)]
        for prot, base, r in rs:
            md.append(f'| {prot} / {base} | ' + ' | '.join(
                fmt(r[k]) for k in keys) + ' |')
    md.append('')
    cdf_png(plt, os.path.join(out, 'colo_rtt_cdf.png'),
            [(c, [x for r in co[c]['net'] for x in r.get('rtts_ms', [])])
             for c in configs],
            'echo round trip, ms (64-byte messages)', True)
    pngs.append(('Echo round trip, ours against COLO, CDF',
                 'colo_rtt_cdf.png'))
    return md


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--out', required=True)
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--parts', default=','.join(PARTS))
    ap.add_argument('--render-only', action='store_true')
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, 'results.json')
    if a.render_only:
        with open(path) as f:
            res = json.load(f)
    else:
        q = QUICK if a.quick else FULL
        res = {'meta': {
            'date': datetime.datetime.now().isoformat(timespec='seconds'),
            'host': platform.node(), 'cpus': os.cpu_count(),
            'mode': 'quick' if a.quick else 'full', 'knobs': q,
            'commit': subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                                     cwd=HERE, capture_output=True,
                                     text=True).stdout.strip()}}
        for part in a.parts.split(','):
            if part not in PARTS:
                ap.error(f'unknown part {part!r}: one of {", ".join(PARTS)}')
            t0 = time.monotonic()
            print(f'== {part}', flush=True)
            res[part] = globals()[f'part_{part}'](q)
            print(f'== {part}: {time.monotonic() - t0:.0f} s', flush=True)
            with open(path, 'w') as f:
                json.dump(res, f)
    render(res, a.out)
    print(f'report: {os.path.join(a.out, "summary.md")}')


if __name__ == '__main__':
    main()

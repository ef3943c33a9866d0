#!/usr/bin/env python3
#
# What several vCPUs cost under FT, measured side by side in one run.  At
# each -smp N (default 1, 2 and 4) the same guest runs guest/smpwork.c
# (one thread per vCPU, pinned; private hashing, a shared table under a
# mutex, an atomic counter; ft.smp_rounds rounds per thread per epoch)
# in three VMs, one after the other, the order turning each round:
#   - unprotected: -icount shift=5, no record/replay, no backup;
#   - protected: a primary (rr=record) streaming to a live backup
#     (rr=replay) on the same host;
#   - MTTCG: plain TCG, -accel tcg,thread=multi, no icount: what a
#     multi-core guest gets without replay (one host thread per vCPU).
# It prints, per N, the median over --rounds of:
#   - the primary's speed as a ratio to the unprotected VM (epochs of
#     smpwork per wall second);
#   - the backup's speed as a ratio to the primary's (guest instructions
#     per wall second over the same window; >= 1.0 keeps up);
#   - the log's bandwidth in Mbit/s;
#   - the execution lag (x-query-ft lag-ms every 100 ms), p50 and p99;
#   - the workload's throughput in each VM (work/s: one thread's epoch
#     of smpwork per second, so comparable across N), and the protected
#     primary's as a ratio to MTTCG's: what replay costs a multi-core
#     guest.
# This host has 2 cores: MTTCG gets at most 2 for its vCPUs, and the pair
# shares them between primary and backup.  Not a test: nothing is
# asserted.
#
#   python3 tests/bench/bench_smp.py [--seconds N] [--rounds N]
#                                    [--smp 1,2,4] [--smp-rounds N]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import json
import os
import re
import statistics
import sys
import time

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
from ft_test import Pair, Workdir, guest_args, percentile as pct, \
    query_ft, query_replay  # noqa: E402

EPOCH = re.compile(r'^SMP epoch (\d+) .* (ok|BAD)\r?$', re.M)


def epochs(con):
    found = EPOCH.findall(con.text())
    bad = [n for n, ok in found if ok != 'ok']
    if bad:
        raise RuntimeError(f'smpwork lost an update in epoch {bad[0]}')
    return len(found)


def window(con, seconds, tick=None):
    """Epochs per second in @con over @seconds, after the first epoch;
    @tick() is called every 100 ms meanwhile."""
    t0, n0 = time.monotonic(), epochs(con)
    while time.monotonic() - t0 < seconds:
        time.sleep(0.1)
        if tick:
            tick()
    return (epochs(con) - n0) / (time.monotonic() - t0)


def append(smp_rounds):
    return guest_args(work='smp', smp_epochs=0, smp_rounds=smp_rounds)


def run_alone(n, seconds, smp_rounds, mttcg):
    """Epochs per second of one unprotected VM: -icount, or MTTCG."""
    with Workdir('bench_smp') as wd:
        args = ['-smp', str(n)]
        if mttcg:
            args += ['-accel', 'tcg,thread=multi']
        vm, con = wd.make_vm('mttcg' if mttcg else 'plain', append(smp_rounds),
                             shift=None if mttcg else 5, args=args)
        vm.launch()
        con.wait(r'^SMP epoch 1 ', 600, vm)
        return {'epochs': window(con, seconds)}


def run_pair(n, seconds, smp_rounds):
    with Workdir('bench_smp') as wd, \
            Pair(append(smp_rounds), workdir=wd, smp=n) as (p, pcon, b, _):
        pcon.wait(r'^SMP epoch 1 ', 600, p)
        lags = []
        pa, ba = query_replay(p), query_replay(b)
        k0 = query_ft(p)[0]['log-acked']
        res = {'epochs': window(
            pcon, seconds, lambda: lags.append(query_ft(p)[0]['lag-ms']))}
        pz, bz = query_replay(p), query_replay(b)
        pi, bi = query_ft(p)[0], query_ft(b)[0]
        res['backup'] = ((bz[1] - ba[1]) / (bz[0] - ba[0])) / \
            max((pz[1] - pa[1]) / (pz[0] - pa[0]), 1)
        res['mbps'] = (pi['log-acked'] - k0) * 8 / (pz[0] - pa[0]) / 1e6
        res['lag_p50'], res['lag_p99'] = pct(lags, 50), pct(lags, 99)
        res['mismatches'] = bi['digest']['mismatches']
        res['state'] = f"{pi['state']}/{bi['state']}"
        return res


def measure(n, seconds, rounds, smp_rounds):
    rows = []
    for r in range(rounds):
        runs = [('plain', lambda: run_alone(n, seconds, smp_rounds, False)),
                ('pair', lambda: run_pair(n, seconds, smp_rounds)),
                ('mttcg', lambda: run_alone(n, seconds, smp_rounds, True))]
        k = r % len(runs)
        got = {name: f() for name, f in runs[k:] + runs[:k]}
        pair, plain, mttcg = got['pair'], got['plain'], got['mttcg']
        rows.append({
            'primary': pair['epochs'] / max(plain['epochs'], 1e-9),
            'backup': pair['backup'], 'mbps': pair['mbps'],
            'lag_p50': pair['lag_p50'], 'lag_p99': pair['lag_p99'],
            'plain_eps': plain['epochs'], 'pair_eps': pair['epochs'],
            'mttcg_eps': mttcg['epochs'],
            'vs_mttcg': pair['epochs'] / max(mttcg['epochs'], 1e-9),
            'plain_vs_mttcg': plain['epochs'] / max(mttcg['epochs'], 1e-9),
            'mismatches': pair['mismatches'], 'state': pair['state']})
        print(f'  -smp {n} round {r + 1}: ' +
              json.dumps({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in rows[-1].items()}), flush=True)
    med = {k: statistics.median(row[k] for row in rows)
           for k in rows[0] if k != 'state'}
    med['states'] = sorted({row['state'] for row in rows})
    return med


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--seconds', type=float, default=30)
    ap.add_argument('--rounds', type=int, default=1)
    ap.add_argument('--smp', default='1,2,4')
    ap.add_argument('--smp-rounds', type=int, default=20,
                    help="smpwork's rounds per thread per epoch")
    args = ap.parse_args()
    results = {}
    for n in [int(x) for x in args.smp.split(',')]:
        results[n] = measure(n, args.seconds, args.rounds, args.smp_rounds)
    print()
    # Throughput in thread-epochs per second (an epoch is N threads'
    # work at -smp N): comparable across N
    print('-smp  primary/unprot  backup/primary  log Mbit/s  lag p50/p99 ms'
          '  work/s unprot    pair   MTTCG  pair/MTTCG  unprot/MTTCG')
    for n, m in results.items():
        print(f"{n:4d}  {m['primary']:14.2f}  {m['backup']:14.3f}  "
              f"{m['mbps']:10.2f}  {m['lag_p50']:6.1f}/{m['lag_p99']:6.1f}  "
              f"{m['plain_eps'] * n:13.0f} {m['pair_eps'] * n:7.0f} "
              f"{m['mttcg_eps'] * n:7.0f}  {m['vs_mttcg']:10.2f}  "
              f"{m['plain_vs_mttcg']:12.2f}")
    print(json.dumps({'bench_smp': results}))


if __name__ == '__main__':
    main()

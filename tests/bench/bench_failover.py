#!/usr/bin/env python3
#
# Failover figures over a long series of real faults.  Each trial boots a
# protected pair (shared lock directory, held console output), waits a
# random time after FT-READY, then
#   - kill -9 of the primary (process death: the kernel closes the
#     logging socket, so the backup notices at once), or
#   - SIGSTOP of the primary (a hung host: found by the heartbeat
#     timeout), after which the old primary is continued and must halt,
# (every third kill counts its random delay from the launch, so that it
# can hit the guest's boot), and checks what test_ft_failover checks: the backup goes live, the
# console the outside world saw has every tick in order with at most a
# repeat at the switch, and the CPU job's result is right.
#
# Prints per trial and then p50/p99 of:
#   - detection: fault to FT_PEER_LOST on the backup;
#   - go-live: FT_PEER_LOST to running live (lock, play the rest, switch);
#   - total: fault to FT_WENT_LIVE;
#   - console output delay added by the output rule (primary, p50/p99 of
#     the last 1024 writes before the fault);
#   - the longest silence either side saw from its peer before the fault.
# Not a test: nothing is timed against a limit.
#
# --stop-work ticker,cpu hangs primaries whose guest runs the CPU job (a
# hang under load); --rr-options passes channel options to both sides
# (other heartbeats and timeouts, say).
#
#   python3 tests/bench/bench_failover.py [--trials N] [--stops N]
#       [--stop-work W] [--rr-options OPTS] [--seed S] [--json FILE]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import json
import os
import random
import sys
import time

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
from ft_test import Pair, percentile as pct  # noqa: E402
from ft_test.failover import kill_primary_trial, trial_append  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--trials', type=int, default=20,
                    help='kill -9 trials, alternating ticker and cpu')
    ap.add_argument('--stops', type=int, default=5, help='SIGSTOP trials')
    ap.add_argument('--stop-work', default='ticker',
                    help='the guest\'s work in SIGSTOP trials (ticker, or '
                    'ticker,cpu for a hang under load)')
    ap.add_argument('--rr-options', default='',
                    help='more channel options for both sides, such as '
                    'rrheartbeat=20,rrtimeout=120')
    ap.add_argument('--seed', default=None)
    ap.add_argument('--json', help='write all trials here')
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    plan = []
    for i in range(a.trials):
        plan.append(('kill', 'ticker' if i % 2 == 0 else 'ticker,cpu'))
    plan += [('stop', a.stop_work)] * a.stops
    results = []
    failures = 0
    for n, (fault, work) in enumerate(plan, 1):
        # Every third kill may hit the boot: counted from the launch.
        from_launch = fault == 'kill' and n % 3 == 0
        delay = rnd.uniform(1, 10) if from_launch else rnd.uniform(0, 4)
        cpu_iters = 60 if 'cpu' in work else None
        t0 = time.monotonic()
        rrx = ',' + a.rr_options if a.rr_options else ''
        pair = Pair(trial_append(work, cpu_iters), protected=True, rrx=rrx)
        try:
            with pair:
                r = kill_primary_trial(pair, work, delay, stop=fault == 'stop',
                                       cpu_iters=cpu_iters,
                                       from_launch=from_launch)
        except Exception as e:     # noqa: BLE001  reported, series goes on
            failures += 1
            print(f'{n:3} {fault:4} {work:10} FAILED: {e}'[:400],
                  f'(logs: {pair.workdir.path})', flush=True)
            continue
        r.update(fault=fault, work=work, delay_s=delay,
                 wall_s=time.monotonic() - t0)
        results.append(r)
        print(f'{n:3} {fault:4} {work:10} {delay:4.1f}s after '
              f'{"launch  " if from_launch else "FT-READY"}: detect '
              f'{r["detect_ms"]:6.1f} ms, go-live {r["golive_ms"]:6.1f} ms, '
              f'total {r["total_ms"]:6.1f} ms, ticks {r["ticks"]}, repeated '
              f'{r["repeated_bytes"]} B' +
              (', CPU job done before the fault'
               if 'cpu' in work and r['cpu_done_before_fault'] else ''),
              flush=True)

    print()
    print(f'{len(results)} trials passed, {failures} failed')
    print(f'{"figure":38} {"p50":>9} {"p99":>9} {"max":>9}  n')
    for fault in ('kill', 'stop'):
        rs = [r for r in results if r['fault'] == fault]
        if not rs:
            continue
        for key, what in (('detect_ms', 'detection'),
                          ('golive_ms', 'go-live'),
                          ('total_ms', 'total (fault to live)')):
            v = [r[key] for r in rs]
            print(f'{fault + " -9" if fault == "kill" else "SIGSTOP":8} '
                  f'{what + " ms":29} {pct(v, 50):9.1f} {pct(v, 99):9.1f} '
                  f'{max(v):9.1f}  {len(v)}')
    d50 = [r['delay_p50_ms'] for r in results if r['delay_p50_ms']]
    d99 = [r['delay_p99_ms'] for r in results if r['delay_p99_ms']]
    gaps = [r['hb_gap_max_ms'] for r in results]
    if d50:
        print(f'{"console output delay ms (median of trials)":38} '
              f'{pct(d50, 50):9.2f} {pct(d99, 50):9.2f}')
    if gaps:
        print(f'{"longest peer silence ms":38} {pct(gaps, 50):9.1f} '
              f'{pct(gaps, 99):9.1f} {max(gaps):9.1f}')
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())

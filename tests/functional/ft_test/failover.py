# One failover trial on a protected pair: a fault of the primary, then
# the checks that the backup took over with nothing lost.  Used by
# test_ft_failover.py (and the other failover tests) and by
# tests/bench/bench_failover.py.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import re
import signal
import time

from .console import splice_consoles, ticks
from .vm import wait_event, wait_exit
from .workloads import expected_cpu_result, guest_args


def _expect(got, want, what):
    if got != want:
        raise AssertionError(f'{what}: {got!r} != {want!r}')


def trial_append(work, cpu_iters=None):
    """The kernel command line of a trial running @work."""
    knobs = {'work': work}
    if cpu_iters:
        knobs['cpu_iters'] = cpu_iters
    return guest_args(**knobs)


def kill_primary_trial(pair, work, delay, cpu_iters=None, stop=False,
                       from_launch=False):
    """Kill -9 the primary of @pair (protected, started, its guest
    running @work: see trial_append()) @delay s after FT-READY; check
    the takeover.

    With @stop, SIGSTOP it instead (a hung primary, found by timeout).
    With @from_launch, @delay counts from the launch (so the fault can
    hit the boot) instead of from FT-READY.

    Returns the figures: detection and go-live times in ms; raises
    AssertionError on a failed check.
    """
    p, pcon, b, bcon = pair
    if not from_launch:
        pcon.wait(r'FT-READY', 120, p)
    time.sleep(delay)
    pinfo = p.cmd('x-query-ft')
    cpu_done = 'CPU result' in pcon.text()
    t_kill = time.time()
    os.kill(p.get_pid(), signal.SIGSTOP if stop else signal.SIGKILL)
    lost = wait_event(b, 'FT_PEER_LOST', 30)
    live = wait_event(b, 'FT_WENT_LIVE', 60)
    t_lost = lost['timestamp']['seconds'] + \
        lost['timestamp']['microseconds'] / 1e6
    t_live = live['timestamp']['seconds'] + \
        live['timestamp']['microseconds'] / 1e6
    _expect(b.cmd('query-status')['status'], 'running', 'backup runstate')
    # The guest carries on: a tick, or the CPU result, from the backup
    if 'cpu' in work and 'CPU result' not in pcon.text():
        bcon.wait(r'CPU result', 300, b)
    if 'ticker' in work:
        n = len(re.findall(r'^TICK ', pcon.text() + bcon.text(), re.M))
        bcon.wait(rf'TICK {n + 2}\b', 120, b)
    stream, repeated = splice_consoles(pcon.text(), bcon.text())
    seen = ticks(stream)
    if 'cpu' in work:
        m = re.search(r'^CPU result ([0-9a-f]+)', stream, re.M)
        if m is None:
            raise AssertionError('no CPU result')
        _expect(m.group(1), expected_cpu_result(cpu_iters or 40),
                'CPU result')
    info = b.cmd('x-query-ft')
    _expect(info['state'], 'live', 'backup state')
    _expect(info['digest']['mismatches'], 0, 'digest mismatches')
    if stop:
        os.kill(p.get_pid(), signal.SIGCONT)
        _expect(wait_exit(p, 30), 1, 'exit status of the old primary')
    return {'detect_ms': (t_lost - t_kill) * 1000,
            'delay_p50_ms': pinfo.get('output-delay-p50-ms'),
            'delay_p99_ms': pinfo.get('output-delay-p99-ms'),
            'hb_gap_max_ms': max(pinfo['heartbeat-gap-max-ms'],
                                 info['heartbeat-gap-max-ms']),
            'golive_ms': live['data']['failover-ms'],
            'total_ms': (t_live - t_kill) * 1000,
            'ticks': len(seen), 'repeated_bytes': repeated,
            'cpu_done_before_fault': cpu_done}


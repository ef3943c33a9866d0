#!/usr/bin/env python3
#
# Network figures, protected against unprotected, measured in one run on
# the same bridged network (a Linux bridge, a tap per QEMU, the client in
# its own network namespace):
#   - echo round trip time (64-byte messages on one TCP connection), p50
#     and p99;
#   - bulk TCP throughput towards the guest (rx: to its discard port) and
#     from it (tx: HTTP downloads), as ratios;
#   - log bandwidth on the logging channel during the receive-heavy run.
# The unprotected VM runs the same guest with the same -icount shift but
# no record/replay and no backup.  Both sides of the protected pair share
# this host's cores.  Compare with the paper's Table 3 (1 Gbit/s logging
# link): receive 940 -> 604 Mbit/s, transmit 940 -> 855 Mbit/s.
# With --tls x509|psk, a third run puts the same pair's logging channel
# under TLS, and the TLS pair is compared with the clear-text pair.
# With --compare QEMU, the unprotected VM and the pair also run on another
# qemu-system-x86_64 (an older build, say), in the order new, old, old,
# new, and each is printed against its counterpart: before and after a
# change, in one run.
# Not a test: nothing is asserted.
#
# The pair's run also reports the longest silence either side heard from
# its peer (heartbeat-gap-max-ms) and both sides' states after the load:
# a false failover under load would show there.  --rr-options passes
# channel options to the pair.
#
#   python3 tests/bench/bench_network.py [--seconds S] [--tls x509|psk]
#                                        [--compare OTHER-QEMU]
#                                        [--rr-options OPTS]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import json
import os
import sys
import threading

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'functional'))
from ft_test import BridgeNet, Pair, Workdir, guest_args  # noqa: E402


def run(protected, seconds, tls=None, qemu=None, rrx=''):
    with BridgeNet(os.getpid() % 1000) as net, Workdir('bench_network') as wd:
        append = guest_args(ip=net.GUEST_IP + '/24', work='echo,http',
                            http_mb=8)
        if protected:
            with Pair(append, workdir=wd, protected=True, tls=tls, qemu=qemu,
                      rrx=rrx, primary_args=net.nic_args(0),
                      backup_args=net.nic_args(1)) as pair:
                res = measure(net, pair.primary, pair.pcon, True, seconds)
                # The longest silence either side heard from its peer
                # under this load, and whether the pair is still whole
                # (a false failover would show here).
                infos = [vm.cmd('x-query-ft') for vm in
                         (pair.primary, pair.backup)]
                res['silence_ms'] = max(i['heartbeat-gap-max-ms']
                                        for i in infos)
                res['states'] = [i['state'] for i in infos]
                return res
        p, pcon = wd.make_vm('plain', append, qemu=qemu,
                             args=net.nic_args(0, filters=False))
        p.launch()
        return measure(net, p, pcon, False, seconds)


def measure(net, p, pcon, protected, seconds):
    """The figures of VM @p (a protected pair's primary if @protected),
    its console @pcon, on @net."""
    res = {}
    pcon.wait(r'FT-READY', 180, p)
    res['rtt'] = net.measure('rtt', seconds)
    samples = []
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            try:
                samples.append(p.cmd('x-query-ft')['bandwidth-mbps'])
            except Exception:   # noqa: BLE001  unprotected: no channel
                return
    t = threading.Thread(target=sample)
    if protected:
        t.start()
    res['rx'] = net.measure('rx', seconds)
    done.set()
    if protected:
        t.join()
        # skip the first second of the window
        res['log_mbps'] = max(samples[2:] or samples or [0])
    res['tx'] = net.measure('tx', seconds)
    return res


def table(name_a, a, name_b, b, log=False):
    """Print the figures of runs @a and @b side by side, with ratios."""
    print()
    print(f'{"figure":36} {name_a:>12} {name_b:>12} {"ratio":>7}')
    rows = [('echo RTT p50 ms', 'rtt', 'rtt_p50_ms'),
            ('echo RTT p99 ms', 'rtt', 'rtt_p99_ms'),
            ('receive (client -> guest) Mbit/s', 'rx', 'mbps'),
            ('transmit (guest -> client) Mbit/s', 'tx', 'mbps')]
    for label, run_key, fig in rows:
        x, y = a[run_key][fig], b[run_key][fig]
        print(f'{label:36} {x:12.2f} {y:12.2f} {y / x:7.2f}')
    if log:
        x, y = a['log_mbps'], b['log_mbps']
        print(f'{"log bandwidth during receive Mbit/s":36} {x:12.2f} '
              f'{y:12.2f} {y / x:7.2f}')


def compare(other, seconds):
    """Before (@other) and after (this build), side by side: the
    unprotected VM and the pair, in the order after, before, before,
    after, so that the host's drift weighs on both alike."""
    res = {}
    for protected in (False, True):
        for side, qemu in (('after', None), ('before', other),
                           ('before', other), ('after', None)):
            r = run(protected, seconds, qemu=qemu)
            print(f'{side} {"protected" if protected else "unprotected"}:',
                  json.dumps(r), flush=True)
            res.setdefault((side, protected), []).append(r)

    def mean(runs):
        out = {}
        for k in runs[0]:
            if isinstance(runs[0][k], dict):
                out[k] = mean([r[k] for r in runs])
            elif isinstance(runs[0][k], (int, float)):
                out[k] = sum(r[k] for r in runs) / len(runs)
        return out
    for protected in (False, True):
        name = 'the pair' if protected else 'the unprotected VM'
        print(f'\n{name}: before ({other}) and after (this build), '
              'mean of 2 runs each')
        table('before', mean(res[('before', protected)]),
              'after', mean(res[('after', protected)]), log=protected)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seconds', type=float, default=10)
    ap.add_argument('--tls', choices=('x509', 'psk'),
                    help='also run the pair under TLS and compare')
    ap.add_argument('--compare', metavar='QEMU',
                    help='also run everything on this qemu-system-x86_64 '
                    '(before), and print it against the build (after)')
    ap.add_argument('--rr-options', default='',
                    help='more channel options for the pair, such as '
                    'rrheartbeat=20,rrtimeout=120')
    a = ap.parse_args()
    rrx = ',' + a.rr_options if a.rr_options else ''
    if os.geteuid() != 0:
        sys.exit('needs root (taps, bridge, network namespaces)')
    if a.compare:
        compare(a.compare, a.seconds)
        return
    u = run(False, a.seconds)
    print('unprotected:', json.dumps(u), flush=True)
    p = run(True, a.seconds, rrx=rrx)
    print('protected:  ', json.dumps(p), flush=True)
    table('unprotected', u, 'protected', p)
    print(f'{"log bandwidth during receive Mbit/s":36} {"-":>12} '
          f'{p["log_mbps"]:12.2f}')
    print(f'{"longest peer silence ms":36} {"-":>12} '
          f'{p["silence_ms"]:12.2f}  (states {", ".join(p["states"])})')
    print('paper (Table 3, 1 Gbit/s logging link): receive 940 -> 604 '
          '(0.64), transmit 940 -> 855 (0.91)')
    if not a.tls:
        return
    t = run(True, a.seconds, tls=a.tls, rrx=rrx)
    print(f'{a.tls}:        ', json.dumps(t), flush=True)
    table('clear text', p, a.tls, t, log=True)


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
#
# The main job: a protected pair of the default test guest on this machine.
#
# Starts a backup and a primary as two qemu-system-x86_64 processes, with a
# logging channel between them (TCP on 127.0.0.1) and a shared lock
# directory, shows their live status once a second, and kills the primary
# with kill -9 when you press Enter (or after --kill-after seconds), so that
# you can watch the backup take over.  Then it checks the console the
# outside world saw: every tick in order, nothing lost.
#
#   scripts/ft-demo.py [--kill-after S] [--watch S] [--work ticker,cpu]
#
# Run through scripts/run-demo.sh, which builds everything first.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import os
import re
import select
import shutil
import signal
import sys
import time

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'tests',
                                'functional'))
from ft_test import BUILD, QEMU_BIN, BridgeNet, Pair, Workdir, guest_args, \
    splice_consoles, ticks  # noqa: E402


def status_line(vm, events):
    """One line of @vm's x-query-ft; its new QMP events go to @events."""
    try:
        i = vm.cmd('x-query-ft')
        events += vm.get_qmp_events()
    except Exception:      # noqa: BLE001  the process just died
        return f'{vm._name:7} process ended (exit status {vm.exitcode()})'
    pos = (f'acked {i.get("log-acked", 0):>9}' if i['role'] == 'primary'
           else f'played {i.get("log-consumed", 0):>8}')
    return (f'{vm._name:7} {i["state"]:11} icount {i["icount"]:>11} '
            f'lag {i["lag-ms"]:6.1f} ms  log {pos}  held '
            f'{i["held-bytes"]:>4} B  digests {i["digest"]["checks"]}'
            f'/{i["digest"]["mismatches"]} bad')


def last_line(text):
    lines = [ln for ln in text.replace('\r', '').split('\n')
             if re.match(r'(TICK|CPU|FT-)', ln)]
    return lines[-1] if lines else '-'


def main():
    ap = argparse.ArgumentParser(description='A protected pair of the '
                                 'default test guest; kill the primary.')
    ap.add_argument('--kill-after', type=float, default=None,
                    help='kill the primary after this many seconds '
                    '(default: when you press Enter; 20 s without a '
                    'terminal)')
    ap.add_argument('--watch', type=float, default=12,
                    help='seconds to watch the backup after the takeover')
    ap.add_argument('--work', default='ticker,cpu')
    ap.add_argument('--no-network', action='store_true',
                    help='no bridged network and client (the default when '
                    'not root or without /dev/net/tun)')
    a = ap.parse_args()
    net = None
    if not a.no_network and os.geteuid() == 0 and \
            os.path.exists('/dev/net/tun'):
        net = BridgeNet('d')
        net.__enter__()
    if a.kill_after is None and not sys.stdin.isatty():
        a.kill_after = 20

    wd = Workdir('demo', path=os.path.join(BUILD, 'demo'))
    lock = wd.scratch('lock')
    shutil.rmtree(lock, ignore_errors=True)
    knobs = dict(work=a.work, cpu_iters=200)
    nics = ([], [])
    if net:
        knobs = dict(ip=f'{net.GUEST_IP}/24', work='echo,' + a.work,
                     cpu_iters=200)
        nics = (net.nic_args(0), net.nic_args(1))
    pair = Pair(guest_args(**knobs), workdir=wd, protected=True, lock=lock,
                primary_args=nics[0], backup_args=nics[1])
    primary, pcon, backup, bcon = pair
    icount = f'shift=5,rrchardev=ftlog,rrlock={lock}'

    print('Starting a protected pair of the default test guest.')
    print(f'  lock directory (shared storage): {lock}')
    print(f'  logging channel: tcp 127.0.0.1:{pair.port}')
    print(f'  backup : {QEMU_BIN} ... -icount {icount},rr=replay')
    print(f'  primary: {QEMU_BIN} ... -icount {icount},rr=record')
    print(f'  consoles and logs: {wd.path}')
    if net:
        print(f'  guest network: bridge {net.br}, taps {net.taps[0]} '
              f'(primary) and {net.taps[1]} (backup); a client in network '
              f'namespace {net.ns} holds 2 TCP echo connections to '
              f'{net.GUEST_IP}')
    events = []
    try:
        with pair:
            client = None
            if net:
                pcon.wait(r'FT-READY', 120, primary)
                client, stop = net.client(wd.path, conns=2, wait=0.01)
            if a.kill_after is None:
                print('\nPress Enter to kill -9 the primary.\n')
            else:
                print(f'\nThe primary is killed with kill -9 in '
                      f'{a.kill_after:.0f} s.\n')
            t0 = time.monotonic()
            while True:
                print(status_line(primary, []))
                print(status_line(backup, events))
                print(f'        outside world sees: {last_line(pcon.text())}')
                if a.kill_after is not None:
                    if time.monotonic() - t0 >= a.kill_after:
                        break
                    time.sleep(1)
                elif select.select([sys.stdin], [], [], 1)[0]:
                    sys.stdin.readline()
                    break
            print(f'\n*** kill -9 {primary.get_pid()} (the primary) ***\n')
            t_kill = time.monotonic()
            os.kill(primary.get_pid(), signal.SIGKILL)
            live = None
            while time.monotonic() - t_kill < a.watch:
                print(status_line(backup, events))
                for ev in events:
                    if ev['event'].startswith('FT_') and not ev.get('shown'):
                        ev['shown'] = True
                        print(f'        event {ev["event"]}: '
                              f'{ev.get("data")}')
                        if ev['event'] == 'FT_WENT_LIVE':
                            live = time.monotonic() - t_kill
                print(f'        outside world sees: '
                      f'{last_line(pcon.text() + bcon.text())}')
                time.sleep(1)
            stream, repeated = splice_consoles(pcon.text(), bcon.text())
            seen = ticks(stream)
            print()
            if live is None:
                sys.exit('The backup did not go live; see ' +
                         wd.scratch('backup.log'))
            print(f'The backup went live (event seen {live * 1000:.0f} ms '
                  'after the kill, polling once a second).')
            print(f'The outside world saw ticks 1..{len(seen)} in order with '
                  f'no gap ({repeated} bytes repeated at the switch).')
            m = re.search(r'CPU result (\w+)', stream)
            if m:
                print(f'CPU job result: {m.group(1)}')
            if client:
                res = net.client_result(client, stop)
                for e in res['echo']:
                    print(f'TCP connection {e["id"]}: {e["verified"] >> 20} '
                          f'MiB echoed and verified byte for byte, longest '
                          f'stall {e["max_stall_s"]:.2f} s, '
                          + ('no reset' if not e['error'] else
                             f'FAILED: {e["error"]}'))
    finally:
        if net:
            net.cleanup()


if __name__ == '__main__':
    main()

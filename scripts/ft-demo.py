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
# With --reprotect N, each failover is followed by restoring redundancy: a
# new backup is started (rrjoin=on, -incoming, a tap of its own) and
# attached with x-ft-protect to the VM that went live, which is killed in
# turn after --protected-for seconds of protected running: N failovers in
# a row.  At the end it checks the ticks across all the consoles and the
# client's TCP connections, and prints each cycle's figures.
#
#   scripts/ft-demo.py [--kill-after S] [--watch S] [--work ticker,cpu]
#                      [--reprotect [N]] [--protected-for S]
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
    splice_consoles, ticks, wait_exit  # noqa: E402
from ft_test.protect import protect, start_joiner  # noqa: E402


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


def show_events(events):
    """Print the FT_ events of @events not shown yet."""
    for ev in events:
        if ev['event'].startswith('FT_') and not ev.get('shown'):
            ev['shown'] = True
            print(f'        event {ev["event"]}: {ev.get("data")}')


def watch(vms, cons, seconds, events):
    """Status lines of @vms once a second for @seconds, with the last
    line the outside world saw on the consoles @cons (oldest first)."""
    t0 = time.monotonic()
    while True:
        for vm in vms:
            print(status_line(vm, events))
        show_events(events)
        print(f'        outside world sees: '
              f'{last_line("".join(c.text() for c in cons))}')
        if time.monotonic() - t0 >= seconds:
            return
        time.sleep(1)


def last_tick(*cons):
    return max((int(n) for c in cons
                for n in re.findall(r'^TICK (\d+)', c.text(), re.M)),
               default=0)


def event_time(ev):
    return ev['timestamp']['seconds'] + ev['timestamp']['microseconds'] / 1e6


def follows(live, standby):
    """Raise unless @standby is a protected backup whose replay moves
    while @live runs: only then may @live be killed."""
    info = standby.cmd('x-query-ft')
    if info['state'] != 'streaming' or not info['protected']:
        raise AssertionError(f'{standby._name} is not a protected backup '
                             f'({info["state"]}): no kill')
    pos = info['log-consumed']
    for _ in range(30):
        time.sleep(0.1)
        now = standby.cmd('x-query-ft')
        if now['log-consumed'] != pos:
            return
    p = live.cmd('x-query-ft')
    raise AssertionError(f'{standby._name}: replay stuck at icount '
                         f'{now["icount"]} (log played {pos}) while '
                         f'{live._name} is at icount {p["icount"]}, lag '
                         f'{p["lag-ms"]} ms: no kill')


def reprotect_cycles(a, pair, append, wd, net):
    """@a.reprotect failovers in a row, each followed by a new backup:
    kill -9 of the VM that runs as the primary, the backup goes live, a
    new backup joins it by x-ft-protect, @a.protected_for seconds of
    protected running.  Returns (the VM that runs, its backup, the
    consoles of the VMs that ran live in turn, the cycles' figures);
    raises on a failure."""
    primary, pcon, backup, bcon = pair
    live, lcon, standby, scon = primary, pcon, backup, bcon
    cons, rows, events = [pcon], [], []
    for c in range(1, a.reprotect + 1):
        follows(live, standby)
        pid = live.get_pid()
        print(f'\n*** cycle {c}/{a.reprotect}: kill -9 {pid} ({live._name}, '
              f'the primary) ***\n')
        t_kill = time.time()
        os.kill(pid, signal.SIGKILL)
        try:
            # A float: QEMUMachine waits for ever on an int
            ev = standby.event_wait('FT_WENT_LIVE', timeout=60.0)
        except TimeoutError:
            ev = None
        if ev is None:
            raise AssertionError(f'{standby._name} did not go live in 60 s; '
                                 'see ' + wd.scratch(standby._name + '.log'))
        print(f'        event FT_WENT_LIVE on {standby._name}: {ev["data"]}')
        wait_exit(live, 30)
        killed = live._name
        live, lcon = standby, scon
        cons.append(lcon)
        name = f'backup{c + 1}'
        j, jcon, port, mig = start_joiner(
            wd, name, append, pair.lock_dir, pair.vm_uuid,
            args=net.nic_args(c + 1) if net else ())
        print(f'A new backup, {name} (pid {j.get_pid()}'
              + (f', tap {net.taps[c + 1]}' if net else '')
              + f'), waits; x-ft-protect on {live._name} ...')
        data = protect(live, port, mig)
        print(f'        event FT_PROTECTED on {live._name}: {data}')
        rows.append(dict(cycle=c, killed=killed, live=live._name,
                         backup=name,
                         failover_ms=ev['data'].get('failover-ms'),
                         kill_live_ms=(event_time(ev) - t_kill) * 1000,
                         **data))
        standby, scon = j, jcon
        print(f'\nProtected again: {live._name} (primary) and {name} '
              f'(backup); running for {a.protected_for:.0f} s.\n')
        watch([live, standby], cons, a.protected_for, events)
    return live, standby, cons, rows


def reprotect_report(a, pair, append, wd, net, client, stop):
    """Run the cycles, check and print what the outside world saw; the
    exit status."""
    failures = []
    live = cons = None
    rows = []
    try:
        live, standby, cons, rows = reprotect_cycles(a, pair, append, wd,
                                                     net)
        # The guest goes on in the last pairing: two more ticks
        want = last_tick(*cons) + 2
        deadline = time.monotonic() + 60
        while last_tick(cons[-1]) < want and time.monotonic() < deadline:
            time.sleep(0.2)
        if last_tick(cons[-1]) < want:
            failures.append(f'{live._name}: no TICK {want}')
        info = standby.cmd('x-query-ft')
        if not info['protected'] or info['digest']['mismatches']:
            failures.append(f'{standby._name} at the end: {info}')
    except Exception as e:      # noqa: BLE001  reported, then exit 1
        failures.append(f'{type(e).__name__}: {e}')
    print()
    for r in rows:
        print(f'cycle {r["cycle"]}: kill -9 {r["killed"]}; {r["live"]} live '
              f'{r["kill_live_ms"]:.0f} ms after the kill (failover-ms '
              f'{r["failover_ms"]:.1f}); new backup {r["backup"]}: '
              f'generation {r["generation"]}, pause-ms {r["pause-ms"]:.1f}, '
              f'total-ms {r["total-ms"]:.0f}, bytes {r["bytes"]}')
    if cons:
        try:
            stream, repeated = cons[0].text(), 0
            for con in cons[1:]:
                stream, rep = splice_consoles(stream, con.text())
                repeated += rep
            seen = ticks(stream)
            print(f'The outside world saw ticks 1..{len(seen)} in order '
                  f'with no gap across {len(cons)} consoles and '
                  f'{len(cons) - 1} failovers ({repeated} bytes repeated '
                  'at the switches).')
            m = re.search(r'CPU result (\w+)', stream)
            if m:
                print(f'CPU job result: {m.group(1)}')
        except AssertionError as e:
            failures.append(f'console: {e}')
    if client:
        try:
            failures += net.report_client(client, stop)
        except Exception as e:      # noqa: BLE001  reported, then exit 1
            failures.append(f'client: {e}')
    if len(rows) < a.reprotect:
        failures.append(f'{len(rows)} of {a.reprotect} cycles done')
    if failures:
        print(f'\nFAILED ({wd.path} has the consoles and logs):')
        for f in failures:
            print(f'  {f}')
        return 1
    print(f'\nAll {a.reprotect} failovers and re-protections passed.')
    return 0


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
    ap.add_argument('--reprotect', type=int, nargs='?', const=3,
                    default=None, metavar='N',
                    help='N failovers in a row (default 3), each followed '
                    'by a new backup attached with x-ft-protect')
    ap.add_argument('--protected-for', type=float, default=5,
                    help='with --reprotect: seconds of protected running '
                    'before the next kill')
    a = ap.parse_args()
    if a.reprotect is not None and a.reprotect < 1:
        ap.error('--reprotect needs N >= 1')
    net = None
    if not a.no_network and os.geteuid() == 0 and \
            os.path.exists('/dev/net/tun'):
        # One more tap for each backup that joins
        net = BridgeNet('d', taps=2 + (a.reprotect or 0))
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
    if a.reprotect:
        print(f'  then {a.reprotect} failovers in a row, each followed by a '
              'new backup (x-ft-protect)')
    events = []
    client = stop = None
    try:
        with pair:
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
            if a.reprotect:
                sys.exit(reprotect_report(a, pair, guest_args(**knobs), wd,
                                          net, client, stop))
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
                net.report_client(client, stop)
    finally:
        if client and client.poll() is None:
            client.kill()
            client.wait()
        wd.close()
        if net:
            net.cleanup()


if __name__ == '__main__':
    main()

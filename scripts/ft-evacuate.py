#!/usr/bin/env python3
#
# Host evacuation: move a protected VM off one of its two hosts, as one
# planned operation, and report the pauses the guest saw.
#
#   --free primary  frees the primary's host: x-ft-go-live on the backup
#                   (a planned switch-over: the backup wins the lock, plays
#                   the rest of the log and goes live; the old primary
#                   loses the lock and halts), then x-ft-protect of the new
#                   primary onto a third host;
#   --free backup   frees the backup's host: x-ft-detach on the primary
#                   (it wins the lock and runs on alone; the backup plays
#                   what it received and stops, and is then told to quit),
#                   then x-ft-protect of the primary onto a third host.
#
# On the third host the operator starts a backup that joins (rrjoin=on and
# -incoming: docs/restoring-redundancy.md) before running the tool, which
# talks to the VMs through their QMP sockets (a UNIX socket path or
# HOST:PORT):
#
#   scripts/ft-evacuate.py --free primary|backup --primary-qmp ADDR
#       --backup-qmp ADDR --join-address HOST:PORT --join-uri tcp:HOST:PORT
#       [--joiner-qmp ADDR] [--tls-creds ID] [--tls-hostname NAME]
#       [--max-pause-ms MS] [--keep-backup] [--timeout S]
#
# --demo starts all of it on this machine instead: a protected pair of the
# test guest (ticker and echo server) with a client holding 2 TCP echo
# connections (as root), a joiner for each operation (one more tap each),
# and a QMP socket per VM for the operations above; --free both frees the
# primary's host, then the backup's.  It checks that the ticks the outside
# world saw stayed complete and in order and that the TCP connections
# carried on, and prints the longest wait between two ticks and the
# longest echo stall.
#
#   scripts/ft-evacuate.py --demo [--free primary|backup|both] [--settle S]
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import os
import re
import shutil
import sys
import threading
import time

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'tests',
                                'functional'))
from ft_test import BUILD, BridgeNet, Pair, Workdir, guest_args, \
    splice_consoles, ticks  # noqa: E402
from ft_test.protect import start_joiner  # noqa: E402
# The management layer beside this script
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ftmgmt import Failed, Qmp, check_pair, detach, protect, \
    switch_over  # noqa: E402


def evacuate(free, primary, backup, address, uri, joiner=None, timeout=120,
             tls_creds=None, tls_hostname=None, keep_backup=False,
             max_pause_ms=None):
    """Free the host of the @free side ('primary' or 'backup') of the pair
    @primary/@backup (Qmp), protecting the VM that stays onto the joiner
    at @address/@uri.  Returns the figures; raises Failed."""
    check_pair(primary, backup)
    if joiner and joiner.cmd('query-uuid')['UUID'] != \
            primary.cmd('query-uuid')['UUID']:
        raise Failed(f'{joiner.name} is another VM (-uuid differs)')
    if free == 'primary':
        out = {'switch': switch_over(primary, backup, timeout)}
        stays = backup
    else:
        out = {'detach': detach(primary, backup, timeout, keep_backup)}
        stays = primary
    out['vm'] = stays.name
    out['protect'] = protect(stays, address, uri, timeout, tls_creds,
                             tls_hostname, max_pause_ms)
    info = stays.ft()
    out['state'] = (info['role'], info['state'], info['generation'])
    if joiner:
        j = joiner.ft()
        if j['state'] != 'streaming' or not j['protected'] or \
                j['generation'] != out['protect']['generation']:
            raise Failed(f'the new backup is not protected: {j}')
    return out


def describe(free, out):
    """The report lines of one evacuation."""
    lines = []
    if free == 'primary':
        s = out['switch']
        lines.append(f'x-ft-go-live: the backup went live {s["seen_ms"]:.0f}'
                     f' ms after the command (QEMU\'s failover-ms '
                     f'{s["failover_ms"]:.1f}, at icount {s["icount"]})')
        lines.append('the old primary halted: ' + (s['halted'] or
                     'no FT_HALTED seen (its QMP may have closed first)'))
    else:
        d = out['detach']
        lines.append(f'x-ft-detach: the primary runs on alone '
                     f'{d["seen_ms"]:.0f} ms after the command (its '
                     f'output held meanwhile); the backup: '
                     f'{d["backup_state"]}'
                     + ('; told to quit' if d['backup_quit'] else ''))
    p = out['protect']
    lines.append(f'x-ft-protect of the '
                 f'{"new primary" if free == "primary" else "primary"} '
                 f'({out["vm"]}) onto the new backup: '
                 f'generation {p["generation"]}, pause-ms '
                 f'{p["pause-ms"]:.1f}, total-ms {p["total-ms"]:.0f}, '
                 f'bytes {p["bytes"]}')
    return lines


def management(a, ap):
    for opt in ('primary_qmp', 'backup_qmp', 'join_address', 'join_uri'):
        if not getattr(a, opt):
            ap.error(f'--{opt.replace("_", "-")} is needed (or --demo)')
    if a.free not in ('primary', 'backup'):
        ap.error('--free both needs a joiner per step: only with --demo')
    vms = []
    try:
        primary = Qmp('--primary-qmp', a.primary_qmp)
        vms.append(primary)
        backup = Qmp('--backup-qmp', a.backup_qmp)
        vms.append(backup)
        joiner = None
        if a.joiner_qmp:
            joiner = Qmp('--joiner-qmp', a.joiner_qmp)
            vms.append(joiner)
            st = joiner.cmd('query-status')['status']
            if st != 'inmigrate':
                raise Failed(f'the joiner is {st!r}, not waiting for the '
                             'state (-incoming)')
        out = evacuate(a.free, primary, backup, a.join_address, a.join_uri,
                       joiner, a.timeout, a.tls_creds, a.tls_hostname,
                       a.keep_backup, a.max_pause_ms)
    except Exception as e:      # noqa: BLE001  a QMP error, say: reported
        what = '' if isinstance(e, Failed) else f'{type(e).__name__}: '
        print(f'ft-evacuate: {what}{e}', file=sys.stderr)
        return 1
    finally:
        for vm in vms:
            vm.close()
    print(f'Freed the {a.free}\'s host.')
    for line in describe(a.free, out):
        print('  ' + line)
    print(f'  the VM now: {out["state"][0]} in state {out["state"][1]}, '
          f'generation {out["state"][2]}, protected again')
    return 0


# -- the demo -------------------------------------------------------------

class TickWatch(threading.Thread):
    """Notes when each new tick reaches the outside world (any of the
    consoles), polling every 20 ms."""

    def __init__(self, cons):
        super().__init__(daemon=True)
        self.cons = cons
        self.arrivals = []          # (time.time(), tick)
        self.halt = threading.Event()

    def run(self):
        last = 0
        while not self.halt.wait(0.02):
            n = max((int(m) for c in self.cons
                     for m in re.findall(r'^TICK (\d+)', c.text(), re.M)),
                    default=0)
            if n > last:
                self.arrivals.append((time.time(), n))
                last = n

    def longest_gap(self, t_from=0, t_to=float('inf')):
        """The longest interval between two ticks' arrivals, of those
        that overlap [@t_from, @t_to]; (seconds, the tick that ended
        it)."""
        gaps = [(t1 - t0, n) for (t0, _), (t1, n)
                in zip(self.arrivals, self.arrivals[1:])
                if t1 >= t_from and t0 <= t_to]
        return max(gaps, default=(0.0, 0))

    def last(self):
        return self.arrivals[-1][1] if self.arrivals else 0


def mgmt_args(wd, name):
    """A QMP socket of its own for @name, as an operator's tool has."""
    path = wd.scratch(name + '.mgmt')
    if os.path.exists(path):
        os.unlink(path)
    return path, ['-chardev', f'socket,id=mgmt,path={path},server=on,'
                  'wait=off', '-mon', 'chardev=mgmt,mode=control']


def wait_ticks(watch, n, timeout=60):
    want = watch.last() + n
    deadline = time.monotonic() + timeout
    while watch.last() < want:
        if time.monotonic() > deadline:
            raise Failed(f'no TICK {want} in {timeout} s')
        time.sleep(0.1)


def demo_ops(a, ops, pair, append, wd, nic, socks, watch, results):
    """The evacuations @ops of the demo's @pair, each onto a new joiner,
    through the VMs' QMP sockets @socks; appends (op, figures) to
    @results."""
    deadline = time.monotonic() + 60
    while not pair.backup.cmd('x-query-ft')['protected']:
        if time.monotonic() > deadline:
            raise Failed('the pair is not protected after 60 s')
        time.sleep(0.2)
    wait_ticks(watch, 3)
    results.append(('before', {'gap': watch.longest_gap()[0]}))
    # Which VM has which role
    roles = {'primary': 'primary', 'backup': 'backup'}
    for i, free in enumerate(ops, 1):
        name = f'joiner{i}'
        socks[name], jmon = mgmt_args(wd, name)
        j, jcon, port, mig = start_joiner(wd, name, append, pair.lock_dir,
                                          pair.vm_uuid,
                                          args=nic(1 + i) + jmon)
        print(f'\nFree the {free}\'s host ({roles[free]}): a new backup '
              f'{name} waits on port {port} (state by '
              f'tcp:127.0.0.1:{mig}); the pair runs at tick '
              f'{watch.last()}.')
        vms = [Qmp(roles['primary'], socks[roles['primary']]),
               Qmp(roles['backup'], socks[roles['backup']]),
               Qmp(name, socks[name])]
        try:
            out = evacuate(free, vms[0], vms[1], f'127.0.0.1:{port}',
                           f'tcp:127.0.0.1:{mig}', joiner=vms[2],
                           timeout=a.timeout)
        finally:
            for vm in vms:
                vm.close()
        for line in describe(free, out):
            print('  ' + line)
        if free == 'primary':
            roles['primary'] = roles['backup']
        roles['backup'] = name
        # Protected running, and ticks after the operation
        time.sleep(a.settle)
        wait_ticks(watch, 2)
        step = out.get('switch', out.get('detach'))
        out['gap'], n = watch.longest_gap(step['t0'],
                                          out['protect']['t_done'])
        print(f'  the outside world\'s longest wait between two ticks, '
              f'from the command to FT_PROTECTED: {out["gap"]:.2f} s (up '
              f'to TICK {n}; before any operation: {results[0][1]["gap"]:.2f}'
              ' s)')
        results.append((free, out))


def demo(a):
    net = None
    ops = ['primary', 'backup'] if a.free == 'both' else [a.free]
    if not a.no_network and os.geteuid() == 0 and \
            os.path.exists('/dev/net/tun'):
        net = BridgeNet('e', taps=2 + len(ops))
        net.__enter__()
    wd = Workdir('evacuate', path=os.path.join(BUILD, 'evacuate'))
    lock = wd.scratch('lock')
    shutil.rmtree(lock, ignore_errors=True)
    knobs = dict(work='ticker')
    if net:
        knobs = dict(ip=f'{net.GUEST_IP}/24', work='echo,ticker')
    append = guest_args(**knobs)
    nic = (lambda i: net.nic_args(i)) if net else (lambda i: [])
    socks = {}
    socks['primary'], pmon = mgmt_args(wd, 'primary')
    socks['backup'], bmon = mgmt_args(wd, 'backup')
    pair = Pair(append, workdir=wd, protected=True, lock=lock,
                primary_args=nic(0) + pmon, backup_args=nic(1) + bmon)
    primary, pcon, backup, bcon = pair
    print('A protected pair of the test guest on this machine, for host '
          f'evacuation ({", then ".join(ops)}).')
    print(f'  consoles, logs and QMP sockets: {wd.path}')
    if net:
        print(f'  guest network: bridge {net.br}, a client in namespace '
              f'{net.ns} holds 2 TCP echo connections to {net.GUEST_IP}')
    client = stop = watch = None
    failures, results = [], []
    try:
        with pair:
            pcon.wait(r'FT-READY', 120, primary)
            if net:
                client, stop = net.client(wd.path, conns=2, wait=0.01)
            watch = TickWatch([pcon, bcon])
            watch.start()
            try:
                demo_ops(a, ops, pair, append, wd, nic, socks, watch,
                         results)
            except Exception as e:  # noqa: BLE001  reported, then exit 1
                failures.append(f'{type(e).__name__}: {e}')
            watch.halt.set()
            if client:
                # While the VM still runs: the client stops and reports
                failures += net.report_client(client, stop)
    except Exception as e:      # noqa: BLE001  reported, then exit 1
        failures.append(f'{type(e).__name__}: {e}')
    finally:
        if watch:
            watch.halt.set()
        if client and client.poll() is None:
            client.kill()
            client.wait()
        wd.close()
        if net:
            net.cleanup()
    try:
        # Only the primary and the backup of the start ever ran live
        stream, repeated = splice_consoles(pcon.text(), bcon.text())
        seen = ticks(stream)
        if not seen:
            raise AssertionError('no tick at all')
        print(f'The outside world saw ticks 1..{len(seen)} in order with no '
              f'gap ({repeated} bytes repeated at the switch).')
    except AssertionError as e:
        failures.append(f'console: {e}')
    if watch:
        gap, n = watch.longest_gap()
        print(f'The longest wait between two ticks over the whole run: '
              f'{gap:.2f} s (before TICK {n}).')
    print()
    for free, out in results:
        if free == 'before':
            print(f'before any operation: longest tick gap '
                  f'{out["gap"]:.2f} s')
            continue
        p = out['protect']
        s = out.get('switch')
        print(f'free {free}: '
              + (f'switch-over {s["seen_ms"]:.0f} ms (failover-ms '
                 f'{s["failover_ms"]:.1f}), ' if s else
                 f'detach {out["detach"]["seen_ms"]:.0f} ms, ')
              + f'protected: generation {p["generation"]}, pause-ms '
              f'{p["pause-ms"]:.1f}, total-ms {p["total-ms"]:.0f}, '
              f'bytes {p["bytes"]}; longest tick gap {out["gap"]:.2f} s')
    if len(results) < len(ops) + 1:
        failures.append(f'{len(results)} of {len(ops)} operations done')
    if failures:
        print(f'FAILED ({wd.path} has the consoles and logs):')
        for f in failures:
            print(f'  {f}')
        return 1
    print('Host evacuation passed.')
    return 0


def main():
    ap = argparse.ArgumentParser(
        description='Free the host of a protected VM\'s primary or backup '
        '(planned switch-over or detach, then x-ft-protect onto a third '
        'host), and report the pauses.')
    ap.add_argument('--free', choices=('primary', 'backup', 'both'),
                    default=None, help='whose host to free (both: only '
                    'with --demo, the primary\'s then the backup\'s; '
                    'default with --demo: both)')
    ap.add_argument('--primary-qmp', help='the primary\'s QMP socket: a '
                    'path, or HOST:PORT')
    ap.add_argument('--backup-qmp', help='the backup\'s QMP socket')
    ap.add_argument('--joiner-qmp', help='the new backup\'s QMP socket '
                    '(optional: then it is checked before and after)')
    ap.add_argument('--join-address', help='the new backup\'s logging '
                    'channel, HOST:PORT (or unix:PATH)')
    ap.add_argument('--join-uri', help='the new backup\'s -incoming, '
                    'e.g. tcp:HOST:PORT')
    ap.add_argument('--tls-creds', help='id of the logging channel\'s TLS '
                    'client credentials on the VM (x-ft-protect tls-creds)')
    ap.add_argument('--tls-hostname', help='the name the new backup\'s '
                    'certificate must carry')
    ap.add_argument('--max-pause-ms', type=int, help='x-ft-protect\'s '
                    'max-pause-ms, the pause at the switchover that the '
                    'migration aims for (default: the command\'s own)')
    ap.add_argument('--keep-backup', action='store_true',
                    help='--free backup: leave the stopped backup\'s QEMU '
                    'running (default: tell it to quit)')
    ap.add_argument('--timeout', type=float, default=120,
                    help='seconds to wait for each step (default 120)')
    ap.add_argument('--demo', action='store_true',
                    help='start a protected pair, a client and the '
                    'joiners on this machine, and evacuate')
    ap.add_argument('--settle', type=float, default=5,
                    help='--demo: seconds of protected running after each '
                    'operation')
    ap.add_argument('--no-network', action='store_true',
                    help='--demo: no bridged network and client (the '
                    'default when not root or without /dev/net/tun)')
    a = ap.parse_args()
    if a.demo:
        a.free = a.free or 'both'
        return demo(a)
    if a.free is None:
        ap.error('--free primary|backup is needed')
    return management(a, ap)


if __name__ == '__main__':
    sys.exit(main())

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
import subprocess
import sys
import time
import uuid

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.join(TOP, 'qemu', 'python'))
sys.path.insert(0, os.path.join(TOP, 'tests', 'functional'))
from qemu.qmp.legacy import QEMUMonitorProtocol  # noqa: E402
from ftlib import BUILD, FAST_BOOT, GUEST_DIR, QEMU_BIN, \
    free_tcp_port  # noqa: E402
from ftfail import BridgeNet, splice_consoles, ticks  # noqa: E402


class Side:
    def __init__(self, name, d, args):
        self.name = name
        self.console = os.path.join(d, name + '.console')
        self.qmp_path = os.path.join(d, name + '.qmp')
        self.log = os.path.join(d, name + '.log')
        for f in (self.console, self.qmp_path):
            if os.path.exists(f):
                os.unlink(f)
        self.args = args + ['-qmp', f'unix:{self.qmp_path},server=on,wait=off',
                            '-serial', f'file:{self.console}']
        self.proc = None
        self.qmp = None
        self.events = []

    def start(self):
        self.proc = subprocess.Popen([QEMU_BIN] + self.args,
                                     stdout=open(self.log, 'w'),
                                     stderr=subprocess.STDOUT)

    def connect(self, timeout=60):
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.qmp_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f'{self.name} QEMU did not start; see {self.log}:\n'
                         + open(self.log).read()[-2000:])
            time.sleep(0.05)
        self.qmp = QEMUMonitorProtocol(self.qmp_path)
        self.qmp.connect()

    def query(self):
        if not self.qmp or self.proc.poll() is not None:
            return None
        try:
            r = self.qmp.cmd_raw('x-query-ft')
            for ev in self.qmp.get_events():
                self.events.append(ev)
            return r.get('return')
        except Exception:      # noqa: BLE001  the process just died
            return None

    def text(self):
        try:
            with open(self.console, errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def close_qmp(self):
        if self.qmp:
            try:
                self.qmp.close()
            except Exception:   # noqa: BLE001  the process is gone
                pass
            self.qmp = None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close_qmp()


def status_line(side):
    i = side.query()
    if i is None:
        code = side.proc.poll()
        return f'{side.name:7} process ended (exit status {code})'
    pos = (f'acked {i.get("log-acked", 0):>9}' if i['role'] == 'primary'
           else f'played {i.get("log-consumed", 0):>8}')
    return (f'{side.name:7} {i["state"]:11} icount {i["icount"]:>11} '
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

    d = os.path.join(BUILD, 'demo')
    lock = os.path.join(d, 'lock')
    shutil.rmtree(lock, ignore_errors=True)
    os.makedirs(lock)
    vm_uuid = str(uuid.uuid4())
    port = free_tcp_port()
    common = ['-machine', 'q35', '-cpu', 'Nehalem', '-smp', '1', '-m', '256',
              '-nodefaults', '-display', 'none', '-uuid', vm_uuid,
              '-L', '/usr/share/qemu', '-L', '/usr/share/seabios',
              '-kernel', os.path.join(GUEST_DIR, 'vmlinux'),
              '-initrd', os.path.join(GUEST_DIR, 'initramfs.cpio.gz'),
              '-append', f'{FAST_BOOT} ft.work={a.work} ft.cpu_iters=200',
              '-net', 'none']
    if net:
        common = common[:-2]    # no '-net none'
        i = common.index('-append') + 1
        common[i] = common[i].replace('ft.work=', f'ft.ip={net.GUEST_IP}/24 '
                                      'ft.work=echo,')
    icount = f'shift=5,rrchardev=ftlog,rrlock={lock}'
    backup = Side('backup', d, common + (net.nic_args(1) if net else []) + [
        '-icount', f'{icount},rr=replay',
        '-chardev', f'socket,id=ftlog,host=127.0.0.1,port={port},'
        'server=on,wait=on'])
    primary = Side('primary', d, common + (net.nic_args(0) if net else []) + [
        '-icount', f'{icount},rr=record',
        '-chardev', f'socket,id=ftlog,host=127.0.0.1,port={port}'])

    print('Starting a protected pair of the default test guest.')
    print(f'  lock directory (shared storage): {lock}')
    print(f'  logging channel: tcp 127.0.0.1:{port}')
    print(f'  backup : {QEMU_BIN} ... -icount {icount},rr=replay')
    print(f'  primary: {QEMU_BIN} ... -icount {icount},rr=record')
    print(f'  consoles, QMP sockets and logs: {d}')
    if net:
        print(f'  guest network: bridge {net.br}, taps {net.taps[0]} '
              f'(primary) and {net.taps[1]} (backup); a client in network '
              f'namespace {net.ns} holds 2 TCP echo connections to '
              f'{net.GUEST_IP}')
    try:
        backup.start()
        time.sleep(0.5)
        primary.start()
        backup.connect()
        primary.connect()
        client = None
        if net:
            deadline = time.monotonic() + 120
            while 'FT-READY' not in primary.text():
                if time.monotonic() > deadline:
                    sys.exit('the guest did not come up; see ' +
                             primary.console)
                time.sleep(0.2)
            client, stop = net.client(d, conns=2, wait=0.01)
        if a.kill_after is None:
            print('\nPress Enter to kill -9 the primary.\n')
        else:
            print(f'\nThe primary is killed with kill -9 in {a.kill_after:.0f}'
                  ' s.\n')
        t0 = time.monotonic()
        while True:
            print(status_line(primary))
            print(status_line(backup))
            print(f'        outside world sees: {last_line(primary.text())}')
            if a.kill_after is not None:
                if time.monotonic() - t0 >= a.kill_after:
                    break
                time.sleep(1)
            elif select.select([sys.stdin], [], [], 1)[0]:
                sys.stdin.readline()
                break
        print(f'\n*** kill -9 {primary.proc.pid} (the primary) ***\n')
        t_kill = time.monotonic()
        primary.proc.kill()
        primary.proc.wait()
        primary.close_qmp()
        live = None
        while time.monotonic() - t_kill < a.watch:
            print(status_line(backup))
            for ev in backup.events:
                if ev['event'].startswith('FT_') and not ev.get('shown'):
                    ev['shown'] = True
                    print(f'        event {ev["event"]}: {ev.get("data")}')
                    if ev['event'] == 'FT_WENT_LIVE':
                        live = time.monotonic() - t_kill
            print(f'        outside world sees: '
                  f'{last_line(primary.text() + backup.text())}')
            time.sleep(1)
        stream, repeated = splice_consoles(primary.text(), backup.text())
        seen = ticks(stream)
        print()
        if live is None:
            sys.exit('The backup did not go live; see ' + backup.log)
        print(f'The backup went live (event seen {live * 1000:.0f} ms after '
              f'the kill, polling once a second).')
        print(f'The outside world saw ticks 1..{len(seen)} in order with '
              f'no gap ({repeated} bytes repeated at the switch).')
        m = re.search(r'CPU result (\w+)', stream)
        if m:
            print(f'CPU job result: {m.group(1)}')
        if client:
            res = net.client_result(client, stop)
            for e in res['echo']:
                print(f'TCP connection {e["id"]}: {e["verified"] >> 20} MiB '
                      f'echoed and verified byte for byte, longest stall '
                      f'{e["max_stall_s"]:.2f} s, '
                      + ('no reset' if not e['error'] else
                         f'FAILED: {e["error"]}'))
    finally:
        primary.stop()
        backup.stop()
        if net:
            net.cleanup()


if __name__ == '__main__':
    main()

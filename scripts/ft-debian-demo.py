#!/usr/bin/env python3
#
# The Debian guest under FT: a protected pair of a real Debian system
# (scripts/build-debian-guest.sh: systemd, sshd, SQLite) booted from the
# shared disk, its NIC on a bridge.  A client in its own network namespace
# logs in over ssh and commits rows to a SQLite database, one transaction
# each, printing every acknowledgement; the primary is killed with kill -9
# after --kill-after seconds of that.  The same ssh session carries on
# with the backup; at the end the demo reads the table back in a new
# session (every acknowledged row must be there), powers the guest off
# cleanly and runs e2fsck -fn on its root file system.
#
#   scripts/run-demo.sh --debian [--kill-after S] [--smp N]
#
# Needs root (taps, a network namespace).
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

# The ft_test package (tests/functional/ft_test); see docs/development.md.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'tests',
                                'functional'))
from ft_test import BUILD, BridgeNet, Pair, Workdir, wait_event, \
    wait_exit  # noqa: E402
from ft_test import debian  # noqa: E402


def status(vm):
    try:
        i = vm.cmd('x-query-ft')
    except Exception:      # noqa: BLE001  the process just died
        return f'{vm._name:7} process ended (exit status {vm.exitcode()})'
    return (f'{vm._name:7} {i["role"]:7} {i["state"]:10} '
            f'icount {i.get("icount", 0):>13} lag {i.get("lag-ms", 0):6.1f} ms'
            f'  digests {i["digest"]["checks"]} ok')


def main():
    ap = argparse.ArgumentParser(description='The Debian guest under FT.')
    ap.add_argument('--kill-after', type=float, default=10,
                    help='seconds of commits before the kill -9')
    ap.add_argument('--smp', type=int, default=2, help='vCPUs')
    a = ap.parse_args()
    if os.geteuid() != 0 or not os.path.exists('/dev/net/tun'):
        sys.exit('the Debian demo needs root and /dev/net/tun')
    if not debian.built():
        sys.exit('the Debian guest is not built: run '
                 'scripts/build-debian-guest.sh')
    net = BridgeNet('e')
    net.__enter__()
    wd = Workdir('debian-demo', path=os.path.join(BUILD, 'debian-demo'))
    img = debian.overlay(wd.scratch('root.qcow2'))
    ip = net.GUEST_IP + '/24'
    pair = Pair('unused', workdir=wd, protected=True, memory=debian.MEMORY,
                smp=a.smp,
                primary_args=net.nic_args(0) + debian.debian_args(img, False,
                                                                  ip),
                backup_args=net.nic_args(1) + debian.debian_args(img, True,
                                                                 ip))
    p, pcon, b, bcon = pair
    print(f'Booting Debian ({a.smp} vCPU, {debian.MEMORY} MiB) as a '
          f'protected pair; disk: an overlay on {debian.IMAGE}')
    print(f'  consoles and logs: {wd.path}')
    stop = threading.Event()
    failed = []
    try:
        with pair:
            t0 = time.monotonic()
            pcon.wait(r'FT-READY', 600, p)
            print(f'FT-READY after {time.monotonic() - t0:.1f} s; '
                  f'ssh root@{net.GUEST_IP} from namespace {net.ns}')
            ssh = debian.Ssh(net.ns, net.GUEST_IP)
            db = debian.Sqlite(ssh)
            t = threading.Thread(target=db.insert_until,
                                 args=(stop, failed))
            t.start()
            end = time.monotonic() + a.kill_after
            while time.monotonic() < end:
                time.sleep(1)
                print(status(p))
                print(status(b))
                print(f'        rows committed and acknowledged: '
                      f'{len(db.acked)}')
            before = len(db.acked)
            print(f'\n*** kill -9 {p.get_pid()} (the primary) after '
                  f'{before} acknowledged rows ***\n')
            os.kill(p.get_pid(), signal.SIGKILL)
            live = wait_event(b, 'FT_WENT_LIVE', 60)
            print(f'The backup went live in {live["data"]["failover-ms"]:.1f}'
                  ' ms (FT_WENT_LIVE).')
            for _ in range(5):
                time.sleep(1)
                print(status(b))
                print(f'        rows committed and acknowledged: '
                      f'{len(db.acked)} (the same ssh session)')
            stop.set()
            t.join(120)
            if failed:
                sys.exit(f'the ssh session failed: {failed[0]}')
            rows = {int(x) for x in ssh.run(
                "sqlite3 /var/lib/ftdb/t.db 'SELECT n FROM t'").split()}
            lost = sorted(set(db.acked) - rows)
            print(f'{len(db.acked)} rows acknowledged ({before} before the '
                  f'kill), {len(rows)} in the table, {len(lost)} lost.')
            db.close()
            print('Powering off (systemctl poweroff over ssh).')
            subprocess.run(ssh.argv('systemctl poweroff'),
                           capture_output=True, timeout=120)
            rc = wait_exit(b, 300)
            code, out = debian.fsck(img, wd.scratch('fsck.raw'))
            print(f'QEMU exit status {rc}; e2fsck -fn: exit {code}')
            print(out.strip())
            if lost or rc != 0 or code != 0:
                sys.exit(1)
    finally:
        stop.set()
        wd.close()
        net.cleanup()


if __name__ == '__main__':
    main()

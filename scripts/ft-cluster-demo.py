#!/usr/bin/env python3
#
# The cluster's main job: a fault-tolerant VM placed and re-protected by
# Pacemaker.  Sets up three corosync + Pacemaker nodes on this machine
# (scripts/ftcluster.py: each in its own namespaces, on one bridge, with a
# fence agent), creates the VM as a promotable clone of ocf:qemu-ft:vm,
# and shows the cluster's and the pair's status once a second, with a
# client's TCP echo connections to the guest beside them.  Then it loses
# the primary's node (links down, processes killed; the others fence it)
# when you press Enter, or after --kill-after seconds, and shows the backup going live
# and Pacemaker starting a new backup on the third node.  At the end it
# checks every echoed byte and the console ticks across every VM.
#
#   scripts/ft-cluster-demo.py [--kill-after S] [--watch S]
#                              [--fault node|partition|qemu] [--keep]
#
# Run through scripts/run-demo.sh --cluster, which builds everything first.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import os
import select
import shutil
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'functional'))
from ft_test import BUILD, QEMU_BIN, BridgeNet, ClientNet, guest_args, \
    splice_consoles, ticks  # noqa: E402
from ft_test.config import FIRMWARE_DIRS, GUEST_DIR  # noqa: E402
from ft_test.console import Console  # noqa: E402
from ftcluster import Cluster, install_ocf_agent  # noqa: E402
from ftresource import AGENT, FtResource, LiveWatch, consoles, \
    guest_params  # noqa: E402

UUID = '5e1f0c2a-7d3b-4c8e-9a61-0b2d4f6e8a10'


def show(cl, res, since, work):
    """One status block: Pacemaker's view, and each node's QEMU."""
    roles = {}
    try:
        roles = res.roles()
    except Exception:   # noqa: BLE001  the cluster is electing
        pass
    print(f'--- {time.time() - since:6.1f} s')
    for n in cl.names:
        up = 'up' if cl.alive(n) and cl.link_up(n) else 'DOWN'
        i = res.query(n, 1.0) if up == 'up' else None
        vm = '-'
        if i:
            vm = (f'{i.get("role", "-"):7} {i["state"]:10} gen '
                  f'{i["generation"]:<3} protected {str(i["protected"]):5} '
                  f'lag {i["lag-ms"]:5.1f} ms  '
                  f'{i["bandwidth-mbps"]:5.2f} Mbit/s  held '
                  f'{i["held-bytes"]} B')
        print(f'  {n} {up:4} pacemaker {roles.get(n, "-"):10}  qemu {vm}')
    last = [c for c in consoles(work) if 'TICK' in
            Console(c).text()]
    if last:
        lines = [ln for ln in Console(last[-1]).lines()
                 if ln.startswith('TICK')]
        print(f'  outside world sees: {lines[-1] if lines else "-"}')


def wait_enter(seconds):
    """True when Enter was pressed or @seconds passed (None: Enter only)."""
    if seconds is not None:
        return True
    r, _, _ = select.select([sys.stdin], [], [], 0)
    if r:
        sys.stdin.readline()
        return True
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--kill-after', type=float, default=None,
                    help='lose the primary\'s node after S s of protected '
                    'running (default: on Enter; 10 s without a terminal)')
    ap.add_argument('--watch', type=float, default=8,
                    help='seconds to watch after protected again')
    ap.add_argument('--fault', choices=('node', 'partition', 'qemu'),
                    default='node',
                    help='lose the primary\'s node (links down, processes '
                    'killed; the others fence it), cut it off with its '
                    'storage but running (fenced), or kill -9 its QEMU')
    ap.add_argument('--keep', action='store_true',
                    help='keep the work directory')
    a = ap.parse_args()
    if a.kill_after is None and not sys.stdin.isatty():
        a.kill_after = 10
    work = os.path.join(BUILD, 'cluster-demo')
    cl = Cluster(9, os.path.join(work, 'cluster'))
    cl.down()       # what an interrupted run left
    # A new VM each run: its lock records and consoles go
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cl = Cluster(9, os.path.join(work, 'cluster'))
    # SIGTERM (timeout, kill) ends the run through the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    client = stop = None
    failures = []
    try:
        print('setting up 3 corosync + Pacemaker nodes (n1, n2, n3), each '
              'in its own network, mount and UTS namespaces, on bridge '
              f'{cl.bridge}, with the fence agent fence_ftsim')
        cl.up()
        print(f'cluster formed in {cl.formed_in:.1f} s')
        install_ocf_agent(AGENT)
        res = FtResource(cl)
        append = guest_args(work='echo,ticker', ip=BridgeNet.GUEST_IP + '/24')
        res.create(guest_params(cl, work, QEMU_BIN, GUEST_DIR, FIRMWARE_DIRS,
                                append, BridgeNet.MAC, UUID))
        print('created ftvm-clone, a promotable clone of ocf:qemu-ft:vm: '
              'Pacemaker boots the VM on one node and attaches a backup on '
              'another')
        t0 = time.time()
        net = ClientNet(cl.client_ns)
        while True:
            show(cl, res, t0, work)
            if time.time() - t0 > 300:
                raise SystemExit('FAILED: the VM was not protected and '
                                 'booted within 300 s:\n' + cl.status())
            got = res.protected(cl.names)
            if got and client is None and any(
                    'FT-READY' in Console(c).text() for c in consoles(work)):
                client, stop = net.client(work, conns=2, wait=0.01)
                print('  client: 2 TCP echo connections from namespace '
                      f'{cl.client_ns} to the guest {BridgeNet.GUEST_IP}')
                t_client = time.time()
            if client and (wait_enter(None) if a.kill_after is None else
                           time.time() - t_client >= a.kill_after):
                break
            time.sleep(1)
        p, b, gen = res.protected(cl.names)
        third = next(n for n in cl.names if n not in (p, b))
        watch = LiveWatch(res, cl.names)
        watch.start()
        tk = time.time()
        if a.fault == 'node':
            print(f'*** losing {p}, the primary\'s node: its links down, '
                  'its processes killed; the others fence it')
            cl.kill_node(p)
        elif a.fault == 'partition':
            print(f'*** cutting off {p}, the primary\'s node, with its '
                  'storage: the others fence it')
            cl.cut(p, storage=[os.path.join(work, 'lock')])
        else:
            print(f'*** kill -9 of the primary\'s QEMU on {p}')
            os.kill(res.qemu_pid(p), signal.SIGKILL)
        t_live = t_prot = None
        while True:
            show(cl, res, t0, work)
            i = res.query(b, 1.0)
            if t_live is None and i and i['state'] in ('live', 'streaming'):
                t_live = time.time()
                print(f'*** {b} went live, {(t_live - tk) * 1000:.0f} ms '
                      'after the fault (seen by this loop; failover-ms '
                      f'{i.get("failover-ms", 0):.1f} by QEMU)')
            got = res.protected([b, third], min_gen=gen)
            if t_prot is None and got:
                t_prot = time.time()
                print(f'*** protected again: {got[0]} primary, {got[1]} '
                      f'backup, generation {got[2]}, {t_prot - tk:.1f} s '
                      'after the fault')
            if t_prot and time.time() - t_prot >= a.watch:
                break
            if time.time() - tk > 180:
                failures.append('not protected again within 180 s')
                break
            time.sleep(1)
        watch.stop()
        if watch.double:
            failures.append(f'two VMs live at once: {watch.double}')
        print(cl.status())
        if os.path.exists(cl.fence_log):
            with open(cl.fence_log) as f:
                fenced = f.read().strip()
            if fenced:
                print('fence log:\n' + fenced)
        failures += net.report_client(client, stop)
        client = None
        stream = ''
        for c in consoles(work):
            text = Console(c).text().replace('\r', '')
            if text:
                stream = splice_consoles(stream, text)[0] if stream else text
        try:
            seen = ticks(stream)
            print(f'console: ticks 1..{len(seen)} in order with no gap '
                  'across every VM that was live')
        except AssertionError as e:
            failures.append(str(e))
    finally:
        if client and client.poll() is None:
            client.kill()
        cl.down()
    if failures:
        print('FAILED:\n  ' + '\n  '.join(failures))
        return 1
    print('OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())

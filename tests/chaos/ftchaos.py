#!/usr/bin/python3
#
# The chaos run: a protected VM on a three-node corosync + Pacemaker
# cluster (scripts/ftcluster.py, the resource of scripts/ocf/vm), under
# mixed load from a client outside (TCP echo streams, HTTP downloads)
# with the guest's console ticker and its ext4 workload on a shared disk
# (files rewritten, fsynced and renamed in turn; the image is on a FUSE
# pass-through, tests/functional/ft_test/holdfs.py, that can fail its
# I/O, and the disk stops the VM on an error: werror=stop,rerror=stop),
# takes a random fault every
# --min-gap..--max-gap seconds once it is protected again, for --minutes.
# Pacemaker restores redundancy after each fault; this script only
# clears the failed instance's record (crm_resource --cleanup) 5 s after
# the fault and every 20 s until the pair is protected, as an operator
# or a failure-timeout would.  The wire is captured on each node's link,
# in the direction from the node, the first 256 bytes of each frame
# (about 0.5 GB per 10 minutes of this load).  At the end tests/chaos/checker.py judges what the outside world
# saw, and writes the report and the plot.
#
#   tests/chaos/ftchaos.py --minutes 10 [--seed N] [--out DIR]
#
# The faults (--faults picks some):
#   kill-primary, kill-backup   kill -9 of the QEMU
#   stop-primary, stop-backup   SIGSTOP for 0.5-6 s, then SIGCONT
#   starve-primary, -backup     the QEMU gets 10% of a CPU for 5-15 s
#                               (SIGSTOP 90 ms of every 100 ms)
#   flap-primary, flap-backup   the node's link cut for 0.2-0.6 s, shorter
#                               than corosync's token: longer, the node
#                               would be fenced for good
#   lock-primary, lock-backup   the lock directory unusable on that node
#                               (a read-only empty file system over it)
#                               for 3-15 s
#   disk-errors                 the shared storage fails every read and
#                               write with EIO for 3-15 s: the primary
#                               stops at its first failed request, and
#                               its agent continues it once the storage
#                               is back, which retries it
#
# Root only (namespaces, bridges, taps).  Exit status 1 on a violation.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, 'tests', 'functional'))
sys.path.insert(0, os.path.join(TOP, 'scripts'))
sys.path.insert(0, HERE)

from ft_test.config import FAST_BOOT, FIRMWARE_DIRS, GUEST_DIR, \
    QEMU_BIN  # noqa: E402
from ft_test.ext4 import mkfs_ext4  # noqa: E402
from ft_test.holdctl import HoldFs  # noqa: E402
from ft_test.net import BridgeNet, ClientNet  # noqa: E402
from ftcluster import Cluster, install_ocf_agent  # noqa: E402
from ftresource import AGENT, FtResource, guest_params  # noqa: E402
import checker  # noqa: E402

UUID = '5c0a7e1d-2b3c-4d5e-8f90-a1b2c3d4e5f6'
FAULTS = ('kill-primary', 'kill-backup', 'stop-primary', 'stop-backup',
          'starve-primary', 'starve-backup', 'flap-primary', 'flap-backup',
          'lock-primary', 'lock-backup', 'disk-errors')
# Longest wait for the pair to be protected again after a fault
PROTECT_S = 240


class Run:
    def __init__(self, args):
        self.args = args
        self.rnd = random.Random(args.seed)
        self.out = args.out
        self.lock = threading.Lock()
        self.events = open(os.path.join(self.out, 'events.jsonl'), 'a')
        self.halt = threading.Event()
        self.deck = []

    def event(self, kind, **kw):
        e = dict(t=time.time(), kind=kind, **kw)
        with self.lock:
            self.events.write(json.dumps(e) + '\n')
            self.events.flush()
        print(time.strftime('%H:%M:%S'), kind,
              ' '.join(f'{k}={v}' for k, v in kw.items()), flush=True)

    # -- what the VMs say, four times a second ---------------------------

    def sampler(self):
        with open(os.path.join(self.out, 'samples.jsonl'), 'a') as f:
            while not self.halt.is_set():
                vms, lag, mbps = {}, None, None
                for n in self.nodes:
                    i = self.res.query(n, 1.0)
                    if not i:
                        vms[n] = None
                        continue
                    vms[n] = {'state': i['state'], 'role': i.get('role'),
                              'generation': i.get('generation'),
                              'protected': i.get('protected'),
                              'mismatches': i.get('digest', {}).get(
                                  'mismatches', 0)}
                    if i.get('role') == 'backup' and \
                            i['state'] == 'streaming':
                        lag, mbps = i.get('lag-ms'), i.get('bandwidth-mbps')
                f.write(json.dumps({'t': time.time(), 'vms': vms,
                                    'lag_ms': lag, 'log_mbps': mbps}) + '\n')
                f.flush()
                self.halt.wait(0.25)

    # -- faults ----------------------------------------------------------

    def pid(self, node):
        pid = self.res.qemu_pid(node)
        if not pid:
            raise RuntimeError(f'no QEMU on {node}')
        return pid

    def fault(self, name, p, b):
        node = p if name.endswith('primary') else b
        kind = name.split('-')[0]
        r = self.rnd
        if kind == 'kill':
            self.event('fault', fault=name, node=node)
            os.kill(self.pid(node), signal.SIGKILL)
        elif kind == 'stop':
            d = r.uniform(0.5, 6)
            self.event('fault', fault=name, node=node, seconds=round(d, 2))
            pid = self.pid(node)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(d)
            os.kill(pid, signal.SIGCONT)
        elif kind == 'starve':
            d = r.uniform(5, 15)
            self.event('fault', fault=name, node=node, seconds=round(d, 2))
            pid = self.pid(node)
            end = time.monotonic() + d
            try:
                while time.monotonic() < end:
                    os.kill(pid, signal.SIGSTOP)
                    time.sleep(0.09)
                    os.kill(pid, signal.SIGCONT)
                    time.sleep(0.01)
            except ProcessLookupError:
                pass
        elif kind == 'flap':
            d = r.uniform(0.2, 0.6)
            self.event('fault', fault=name, node=node, seconds=round(d, 2))
            self.cl.cut(node)
            time.sleep(d)
            self.cl.heal(node)
        elif kind == 'lock':
            d = r.uniform(3, 15)
            self.event('fault', fault=name, node=node, seconds=round(d, 2))
            self.cl.run(node, 'mount', '-t', 'tmpfs', '-o', 'ro,size=4k',
                        'ftchaos', self.lockdir)
            time.sleep(d)
            self.cl.run(node, 'umount', self.lockdir)
        elif kind == 'disk':
            d = r.uniform(3, 15)
            self.event('fault', fault=name, seconds=round(d, 2))
            self.storage.ctl('fail')
            time.sleep(d)
            self.storage.ctl('heal')
            t0 = time.monotonic()
            self.event('healed', fault=name,
                       failed=self.storage.state()['failed'])
            # The agent continues the primary that a failed request
            # stopped (resume_io_error), once per monitor
            while True:
                st = self.res.runstate(p)
                if st == 'running':
                    self.event('resumed', node=p,
                               seconds=round(time.monotonic() - t0, 2))
                    break
                if time.monotonic() - t0 > 60:
                    self.event('stuck', fault=name,
                               why=f'the primary is {st} 60 s after its '
                               'storage came back')
                    break
                time.sleep(0.5)
        return node

    def next_fault(self, faults):
        """A fault drawn at random; with --deck, from a shuffled deck of
        them all, dealt out before it is shuffled again, so that a short
        run takes each kind."""
        if not self.args.deck:
            return self.rnd.choice(faults)
        if not self.deck:
            self.deck = list(faults)
            self.rnd.shuffle(self.deck)
        return self.deck.pop()

    def recover(self, name, p, b, gen):
        """Wait for a protected pair again (a new generation if the
        fault ended the old one); clears failed instances meanwhile."""
        t0 = time.time()
        deadline = time.monotonic() + PROTECT_S
        went_live = None
        next_cleanup = time.monotonic() + 5
        time.sleep(3)
        while time.monotonic() < deadline:
            if time.monotonic() >= next_cleanup:
                # Pacemaker bans a node where an instance failed
                # (migration-threshold 1) until its failure is cleared
                self.res.cleanup()
                next_cleanup = time.monotonic() + 20
            st = self.res.states(self.nodes)
            if went_live is None:
                for n, i in st.items():
                    if n != p and i and i['state'] == 'live' and \
                            i.get('generation', 0) >= gen:
                        went_live = n
                        self.event('live', node=n, after=name,
                                   seconds=round(time.time() - t0, 2))
            got = self.res.protected(self.nodes)
            if got and (got[2] > gen or (got[0] == p and got[1] == b)):
                if got[0] != p and went_live is None:
                    # gone live and protected again between two looks
                    self.event('live', node=got[0], after=name,
                               seconds=round(time.time() - t0, 2))
                if got[2] > gen:
                    self.event('protected', primary=got[0], backup=got[1],
                               generation=got[2],
                               seconds=round(time.time() - t0, 2))
                if got[0] != p:
                    self.fenced(got[0])
                return got
            time.sleep(1)
        self.event('stuck', fault=name, why=str(self.res.states(self.nodes)))
        return None

    def fenced(self, node):
        """The agent's record of how long the survivor on @node held its
        disk writes after going live (rrfence=on, docs/fencing.md)."""
        try:
            with open(self.res.path(node, 'agent.log')) as f:
                ms = re.findall(r'disk writes released (\d+) ms', f.read())
        except OSError:
            ms = []
        if ms:
            self.event('fenced', node=node, ms=int(ms[-1]))

    # -- the run ---------------------------------------------------------

    def boot(self):
        append = f'{FAST_BOOT} ft.work=echo,http,ticker,fs ' \
            f'ft.ip={BridgeNet.GUEST_IP}/24 ft.disk_loops=0 ' \
            f'ft.fs_kb={checker.FS_KB}'
        self.res.create(guest_params(
            self.cl, self.out, QEMU_BIN, GUEST_DIR, FIRMWARE_DIRS, append,
            BridgeNet.MAC, UUID,
            disk=os.path.join(self.storage.mnt, 'shared.img'),
            disk_opts=',werror=stop,rerror=stop'))
        self.lockdir = os.path.join(self.out, 'lock')
        (p, b, gen), _ = self.res.wait_protected(self.nodes, timeout=300)
        sha = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not sha:
            for path in os.listdir(self.out):
                if path.startswith('console-'):
                    with open(os.path.join(self.out, path), 'rb') as f:
                        m = re.search(rb'HTTP big.bin sha256 ([0-9a-f]{64})',
                                      f.read())
                    if m:
                        sha = m.group(1).decode()
            time.sleep(1)
        if not sha:
            raise RuntimeError('the guest did not boot (no HTTP sha256)')
        time.sleep(3)
        self.event('protected', primary=p, backup=b, generation=gen,
                   seconds=0)
        return p, b, gen, sha

    def main(self):
        a = self.args
        faults = a.faults.split(',') if a.faults else list(FAULTS)
        for f in faults:
            if f not in FAULTS:
                raise SystemExit(f'unknown fault {f}; known: {FAULTS}')
        self.cl = Cluster(a.tag, os.path.join(self.out, 'cluster'))
        captures = []
        client = None
        try:
            # Mounted before the nodes' mount namespaces are made
            src = os.path.join(self.out, 'storage')
            os.makedirs(src, exist_ok=True)
            mkfs_ext4(os.path.join(src, 'shared.img'), 32)
            os.symlink(os.path.join('storage', 'shared.img'),
                       os.path.join(self.out, 'shared.img'))
            self.storage = HoldFs(src, os.path.join(self.out, 'disk'),
                                  os.path.join(self.out, 'storage.status'))
            self.cl.up()
            install_ocf_agent(AGENT)
            self.nodes = list(self.cl.names)
            self.res = FtResource(self.cl)
            for n in self.nodes:
                captures.append(subprocess.Popen(
                    ['tcpdump', '-q', '-n', '-U', '-Q', 'in', '-s', '256',
                     '-i', self.cl.veth(n),
                     '-w', os.path.join(self.out, f'wire-{n}.pcap'),
                     'ether', 'src', BridgeNet.MAC],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            p, b, gen, sha = self.boot()
            net = ClientNet(self.cl.client_ns)
            client = net.client(self.out, conns=a.conns, http_sha=sha)
            sampler = threading.Thread(target=self.sampler, daemon=True)
            sampler.start()
            end = time.monotonic() + a.minutes * 60
            while time.monotonic() < end:
                time.sleep(self.rnd.uniform(a.min_gap, a.max_gap))
                if time.monotonic() >= end:
                    break
                name = self.next_fault(faults)
                try:
                    self.fault(name, p, b)
                except (RuntimeError, ProcessLookupError) as e:
                    self.event('skipped', fault=name, why=str(e))
                got = self.recover(name, p, b, gen)
                if not got:
                    break
                p, b, gen = got
            res = net.client_result(*client)
            client = None
            with open(os.path.join(self.out, 'client.json'), 'w') as f:
                json.dump(res, f)
            self.halt.set()
            sampler.join(10)
        finally:
            self.halt.set()
            if client:
                try:
                    res = net.client_result(*client, timeout=60)
                    with open(os.path.join(self.out, 'client.json'),
                              'w') as f:
                        json.dump(res, f)
                except Exception as e:   # noqa: BLE001  reported below
                    print('client:', e, file=sys.stderr)
            for c in captures:
                c.send_signal(signal.SIGINT)
                try:
                    c.wait(10)
                except subprocess.TimeoutExpired:
                    c.kill()
            with open(os.path.join(self.out, 'run.json'), 'w') as f:
                json.dump({'mac': BridgeNet.MAC, 'seed': a.seed,
                           'seconds': a.minutes * 60,
                           'faults': faults}, f)
            for n in getattr(self, 'nodes', []):
                for name in ('agent.log', 'qemu.log'):
                    try:
                        shutil.copy(self.res.path(n, name),
                                    os.path.join(self.out, f'{n}-{name}'))
                    except (OSError, KeyError):
                        pass
            self.cl.down()
            if getattr(self, 'storage', None):
                self.storage.close()
        report = checker.check(self.out)
        with open(os.path.join(self.out, 'report.txt')) as f:
            print(f.read(), end='')
        return 1 if report['violations'] else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--minutes', type=float, default=10)
    ap.add_argument('--seed', type=int,
                    default=int(os.environ.get('FT_SEED', '0')) or
                    int.from_bytes(os.urandom(4), 'little'))
    ap.add_argument('--out', default=None)
    ap.add_argument('--min-gap', type=float, default=20)
    ap.add_argument('--max-gap', type=float, default=60)
    ap.add_argument('--conns', type=int, default=2)
    ap.add_argument('--faults', default='')
    ap.add_argument('--deck', action='store_true',
                    help='each kind of fault once, in a random order, '
                    'before any of them again')
    ap.add_argument('--tag', type=int, default=230 + os.getpid() % 20)
    args = ap.parse_args()
    # Not the tag of a cluster that runs (another chaos run, say)
    for _ in range(20):
        if not os.path.exists(f'/sys/class/net/ftcbr{args.tag}'):
            break
        args.tag = 230 + (args.tag - 229) % 20
    if os.geteuid() != 0:
        raise SystemExit('ftchaos: needs root (namespaces, bridges, taps)')
    args.out = args.out or f'/tmp/ftchaos-{time.strftime("%Y%m%d-%H%M%S")}'
    os.makedirs(args.out, exist_ok=True)
    print(f'ftchaos: {args.minutes} min, seed {args.seed}, in {args.out}',
          flush=True)
    return Run(args).main()


if __name__ == '__main__':
    sys.exit(main())

# Failover helpers shared by test_ft_failover.py and tests/bench.
#
# Copyright (c) 2026 The qemu-ft authors
# SPDX-License-Identifier: GPL-2.0-or-later
"""Protected pairs with a shared lock, console splicing, network namespaces.

The outside world's view of the console is what the primary let out
(its console file) followed by what the backup wrote after it went live
(the backup's console file; with ft-hold the backup writes nothing while
it replays).  splice_consoles() joins the two and checks that the only
anomaly is a repeat at the switch point.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

from ftlib import FTTestCase, crc32c, pattern

CPU_BUF_BYTES = 262144


def expected_cpu_result(iters):
    """The guest's cpu workload, recomputed on the host (see guest/init)."""
    buf = pattern('ftcpu', CPU_BUF_BYTES)
    h = ''
    for _ in range(iters):
        h = hashlib.sha256(h.encode() + b'\n' + buf).hexdigest()
    return h


def lock_record(vm, epoch, role='primary', host='elsewhere', pid=4242,
                nonce='0123456789abcdef', time_ns=1795000000000000000):
    """A valid lock record (docs/lock-record.md), e.g. of another VM."""
    body = (f'qemu-ft-lock 1\nvm {vm}\nepoch {epoch}\nrole {role}\n'
            f'host {host}\npid {pid}\nnonce {nonce}\ntime {time_ns}\n')
    return body + 'crc32c %08x\n' % crc32c(body.encode())


def splice_consoles(primary, backup):
    """Join what the primary let out with what the backup wrote.

    The backup's output must begin inside, or right after, the primary's:
    backup = S[b:] and primary = S[:a] with b <= a for the real stream S.
    Returns (S, repeated bytes).  Raises AssertionError on a gap or on
    output that does not match.
    """
    for b in range(0, len(primary) + 1):
        tail = primary[b:]
        if backup.startswith(tail) or tail.startswith(backup):
            if not backup.startswith(tail):
                # The backup wrote less than the overlap: still consistent
                return primary, len(backup)
            return primary + backup[len(tail):], len(tail)
    raise AssertionError('the backup\'s console does not continue the '
                         'primary\'s: primary ends %r, backup starts %r'
                         % (primary[-200:], backup[:200]))


def ticks(stream):
    """TICK numbers in order; asserts they are 1, 2, ... with no gap."""
    seen = [int(n) for n in re.findall(r'^TICK (\d+)\r?$', stream, re.M)]
    if seen != list(range(1, len(seen) + 1)):
        raise AssertionError(f'ticks out of order or with a gap: {seen}')
    return seen


class FailoverCase(FTTestCase):
    """A protected pair: shared lock directory, same -uuid, held output."""

    def make_ft_pair(self, append, rrx='', lock=None, **kw):
        self.lock_dir = lock or self.scratch('lock')
        os.makedirs(self.lock_dir, exist_ok=True)
        self.vm_uuid = str(uuid.uuid4())
        ids = ['-uuid', self.vm_uuid]
        kw.setdefault('backup_hold', True)
        return self.make_pair(
            append, rrx=f',rrlock={self.lock_dir}' + rrx,
            primary_args=ids + list(kw.pop('primary_args', ())),
            backup_args=ids + list(kw.pop('backup_args', ())), **kw)

    def next_trial(self, i, n):
        """Between trials @i and @i+1 of @n in one test: a fresh work
        directory and VMs (the last trial's are cleaned up as usual)."""
        if i + 1 < n:
            self.tearDown()
            self.setUp()

    def lock_path(self, gen=1):
        return os.path.join(self.lock_dir, f'ft-{self.vm_uuid}.{gen}.lock')

    @staticmethod
    def wait_exit(vm, timeout):
        deadline = time.monotonic() + timeout
        while vm.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        popen = getattr(vm, '_popen', None)
        if popen is not None:
            return popen.wait(max(0.1, deadline - time.monotonic()))
        return vm.exitcode()

    def kill_primary_trial(self, work, delay, cpu_iters=None, stop=False,
                           from_launch=False):
        """Kill -9 the primary @delay s after FT-READY; check the takeover.

        With @stop, SIGSTOP it instead (a hung primary, found by timeout).
        With @from_launch, @delay counts from the launch (so the fault can
        hit the boot) instead of from FT-READY.

        Returns the figures: detection and go-live times in ms.
        """
        knobs = {'work': work}
        if cpu_iters:
            knobs['cpu_iters'] = cpu_iters
        p, pcon, b, bcon = self.make_ft_pair(self.guest_args(**knobs))
        if not from_launch:
            pcon.wait(r'FT-READY', 120, p)
        time.sleep(delay)
        pinfo = p.cmd('x-query-ft')
        cpu_done = 'CPU result' in pcon.text()
        t_kill = time.time()
        os.kill(p.get_pid(), signal.SIGSTOP if stop else signal.SIGKILL)
        lost = self.wait_event(b, 'FT_PEER_LOST', 30)
        live = self.wait_event(b, 'FT_WENT_LIVE', 60)
        t_lost = lost['timestamp']['seconds'] + \
            lost['timestamp']['microseconds'] / 1e6
        t_live = live['timestamp']['seconds'] + \
            live['timestamp']['microseconds'] / 1e6
        self.assertEqual(b.cmd('query-status')['status'], 'running')
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
            self.assertIsNotNone(m, 'no CPU result')
            self.assertEqual(m.group(1),
                             expected_cpu_result(cpu_iters or 40))
        info = b.cmd('x-query-ft')
        self.assertEqual(info['state'], 'live')
        self.assertEqual(info['digest']['mismatches'], 0)
        if stop:
            os.kill(p.get_pid(), signal.SIGCONT)
            self.assertEqual(self.wait_exit(p, 30), 1)
        return {'detect_ms': (t_lost - t_kill) * 1000,
                'delay_p50_ms': pinfo.get('output-delay-p50-ms'),
                'delay_p99_ms': pinfo.get('output-delay-p99-ms'),
                'hb_gap_max_ms': max(pinfo['heartbeat-gap-max-ms'],
                                     info['heartbeat-gap-max-ms']),
                'golive_ms': live['data']['failover-ms'],
                'total_ms': (t_live - t_kill) * 1000,
                'ticks': len(seen), 'repeated_bytes': repeated,
                'cpu_done_before_fault': cpu_done}


class BenchRun(FailoverCase):
    """A FailoverCase driven by a benchmark script, outside unittest."""

    def runTest(self):
        pass


def percentile(values, q):
    """The @q-th percentile of @values (nearest rank), NaN if empty."""
    v = sorted(values)
    if not v:
        return float('nan')
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


class Netns:
    """Two network namespaces joined by a veth pair (the logging link)."""

    def __init__(self, tag):
        self.names = (f'ftp{tag}', f'ftb{tag}')
        self.addrs = ('10.77.0.1', '10.77.0.2')
        self.devs = ('ftvp', 'ftvb')

    def run(self, *cmd):
        subprocess.run(cmd, check=True, capture_output=True)

    def exec(self, i, *cmd):
        self.run('ip', 'netns', 'exec', self.names[i], *cmd)

    def wrapper(self, i):
        return ['ip', 'netns', 'exec', self.names[i]]

    def __enter__(self):
        self.cleanup()
        for n in self.names:
            self.run('ip', 'netns', 'add', n)
        self.run('ip', 'link', 'add', self.devs[0], 'netns', self.names[0],
                 'type', 'veth', 'peer', 'name', self.devs[1],
                 'netns', self.names[1])
        for i in (0, 1):
            self.exec(i, 'ip', 'addr', 'add', self.addrs[i] + '/24', 'dev',
                      self.devs[i])
            self.exec(i, 'ip', 'link', 'set', self.devs[i], 'up')
            self.exec(i, 'ip', 'link', 'set', 'lo', 'up')
        return self

    def link(self, up):
        self.exec(0, 'ip', 'link', 'set', self.devs[0],
                  'up' if up else 'down')

    def cleanup(self):
        for n in self.names:
            subprocess.run(['ip', 'netns', 'del', n], capture_output=True)

    def __exit__(self, *exc):
        self.cleanup()


class BridgeNet:
    """The guest's network: a Linux bridge with one tap per QEMU process
    (primary and backup), and a client in its own network namespace on a
    veth port of the same bridge.  The guest keeps its MAC and IP across a
    failover; the backup's announce moves the MAC to its port.
    """
    GUEST_IP = '10.0.3.15'
    CLIENT_IP = '10.0.3.1'
    MAC = '52:54:00:f7:00:01'

    def __init__(self, tag):
        self.br = f'ftbr{tag}'
        self.taps = (f'ftpt{tag}', f'ftbt{tag}')
        self.ns = f'ftcl{tag}'
        self.veth = (f'ftvh{tag}', 'ftvc')

    @staticmethod
    def run(*cmd):
        subprocess.run(cmd, check=True, capture_output=True)

    def __enter__(self):
        self.cleanup()
        self.run('ip', 'link', 'add', self.br, 'type', 'bridge',
                 'forward_delay', '0', 'stp_state', '0')
        self.run('ip', 'link', 'set', self.br, 'up')
        for tap in self.taps:
            self.run('ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap')
            self.run('ip', 'link', 'set', tap, 'master', self.br, 'up')
        self.run('ip', 'netns', 'add', self.ns)
        self.run('ip', 'link', 'add', self.veth[0], 'type', 'veth', 'peer',
                 'name', self.veth[1], 'netns', self.ns)
        self.run('ip', 'link', 'set', self.veth[0], 'master', self.br, 'up')
        for cmd in (['ip', 'addr', 'add', self.CLIENT_IP + '/24', 'dev',
                     self.veth[1]],
                    ['ip', 'link', 'set', self.veth[1], 'up'],
                    ['ip', 'link', 'set', 'lo', 'up']):
            self.run('ip', 'netns', 'exec', self.ns, *cmd)
        return self

    def cleanup(self):
        subprocess.run(['ip', 'netns', 'del', self.ns], capture_output=True)
        for dev in (self.veth[0], *self.taps, self.br):
            subprocess.run(['ip', 'link', 'del', dev], capture_output=True)

    def __exit__(self, *exc):
        self.cleanup()

    def nic_args(self, side):
        """QEMU arguments: virtio-net on this side's tap, under the output
        rule (filter-ft-output) and with its input logged (filter-replay).
        """
        return ['-netdev', f'tap,id=n0,ifname={self.taps[side]},script=no,'
                'downscript=no,vhost=off',
                '-device', f'virtio-net-pci,netdev=n0,mac={self.MAC},romfile=',
                '-object', 'filter-replay,id=fr0,netdev=n0',
                '-object', 'filter-ft-output,id=fo0,netdev=n0']

    def client(self, workdir, conns=4, http_sha=None, wait=0.0):
        """Start ftclient.py in the client namespace; returns (popen, stop
        file)."""
        stop = os.path.join(workdir, 'client.stop')
        if os.path.exists(stop):
            os.unlink(stop)
        cmd = ['ip', 'netns', 'exec', self.ns, sys.executable,
               os.path.join(os.path.dirname(__file__), 'ftclient.py'),
               '--host', self.GUEST_IP, '--conns', str(conns), '--stop', stop,
               '--wait', str(wait)]
        if http_sha:
            cmd += ['--http-sha', http_sha]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True), stop

    @staticmethod
    def client_result(popen, stop, timeout=120):
        with open(stop, 'w'):
            pass
        out, err = popen.communicate(timeout=timeout)
        if popen.returncode != 0:
            raise AssertionError(f'client failed: {err[-2000:]}')
        return json.loads(out)


class BridgedCase(FailoverCase):
    """A failover case whose VMs have a NIC on a tap of one bridge
    (self.net, a BridgeNet), with a client namespace beside them."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0 or not os.path.exists('/dev/net/tun'):
            self.skipTest('needs root and /dev/net/tun for taps')
        self.net = BridgeNet(os.getpid() % 1000)
        self.net.__enter__()

    def tearDown(self):
        super().tearDown()
        self.net.cleanup()

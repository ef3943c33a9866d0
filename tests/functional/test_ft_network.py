#!/usr/bin/env python3
#
# The network output rule and transparent TCP failover on a real bridged
# network: a Linux bridge, one tap per QEMU process, and a client in its
# own network namespace.  The logging channel runs over loopback, a
# separate link.
#
# Copyright (c) 2026 The qemu-ft authors
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import random
import re
import signal
import subprocess
import time
import unittest

from ft_test import BridgedCase

KILLS = int(os.environ.get('FT_NET_KILLS', '2'))
# ... at -smp 2 (test_ft_smp.py has the other -smp tests)
SMP_KILLS = int(os.environ.get('FT_SMP_KILLS', '1'))


class NetworkFailoverTest(BridgedCase):

    def start(self, rrx='', http_mb=2, smp=1):
        net = self.net
        work = 'echo,http,ticker' + (',smp' if smp > 1 else '')
        p, pcon, b, bcon = self.make_ft_pair(
            self.guest_args(ip=net.GUEST_IP + '/24', work=work,
                            http_mb=http_mb, smp_epochs=0),
            rrx=rrx, primary_args=net.nic_args(0),
            backup_args=net.nic_args(1), smp=smp)
        pcon.wait(r'FT-READY', 180, p)
        sha = re.search(r'HTTP big.bin sha256 ([0-9a-f]+)', pcon.text())
        self.assertIsNotNone(sha)
        return p, pcon, b, bcon, sha.group(1)

    def check_client(self, res, before=None):
        self.log.info('client: %s', res)
        for e in res['echo']:
            self.assertIsNone(e['error'], f'echo connection {e["id"]}')
            self.assertGreater(e['verified'], 0)
            if before:
                # The connection carried data after the fault too
                self.assertGreater(e['verified'],
                                   before['echo'][e['id']]['verified'])
        if 'http' in res:
            self.assertIsNone(res['http']['error'])
            self.assertGreater(res['http']['downloads'], 0)

    def test_kill_primary_tcp_survives(self):
        """kill -9 of the primary at random moments: every TCP connection
        survives, every echoed byte is right, downloads check out."""
        self.kill_primary_tcp(KILLS)

    def test_kill_primary_tcp_survives_smp2(self):
        """The same at -smp 2, both vCPUs kept busy (test_ft_smp.py)."""
        self.kill_primary_tcp(SMP_KILLS, smp=2)

    def kill_primary_tcp(self, kills, smp=1):
        rnd = random.Random(os.environ.get('FT_SEED'))
        for i in range(kills):
            with self.subTest(trial=i):
                p, pcon, b, bcon, sha = self.start(smp=smp)
                client, stop = self.net.client(self.workdir, conns=4,
                                               http_sha=sha)
                time.sleep(rnd.uniform(1, 5))
                t0 = time.monotonic()
                os.kill(p.get_pid(), signal.SIGKILL)
                self.wait_event(b, 'FT_WENT_LIVE', 60)
                self.log.info('live after %.0f ms',
                              (time.monotonic() - t0) * 1000)
                time.sleep(6)
                res = self.net.client_result(client, stop)
                self.check_client(res)
                # Traffic after the takeover, through the backup's tap
                self.assertGreater(res['seconds'], 6)
                info = b.cmd('x-query-ft')
                self.assertEqual(info['state'], 'live')
                self.assertEqual(info['digest']['mismatches'], 0)
            self.next_trial(i, kills)

    def test_kill_backup(self):
        """kill -9 of the backup mid-stream: traffic goes on."""
        p, pcon, b, bcon, sha = self.start()
        client, stop = self.net.client(self.workdir, conns=2, http_sha=sha)
        time.sleep(3)
        os.kill(b.get_pid(), signal.SIGKILL)
        self.wait_event(p, 'FT_WENT_LIVE', 30)
        time.sleep(4)
        res = self.net.client_result(client, stop)
        self.check_client(res)
        self.assertEqual(p.cmd('x-query-ft')['held-bytes'], 0)

    def test_nothing_leaves_unacknowledged(self):
        """A capture on the primary's tap: while the backup acknowledges
        nothing (SIGSTOP), no packet from the guest leaves; once the
        primary won the lock, packets flow again."""
        p, pcon, b, bcon, sha = self.start(rrx=',rrtimeout=5000,rrlag=4000')
        cap = self.scratch('tap.txt')
        dump = subprocess.Popen(
            ['tcpdump', '-i', self.net.taps[0], '-n', '-tt', '-l', '-U',
             'ether', 'src', self.net.MAC],
            stdout=open(cap, 'w'), stderr=subprocess.PIPE)
        try:
            client, stop = self.net.client(self.workdir, conns=2, wait=0.02)
            time.sleep(3)
            os.kill(b.get_pid(), signal.SIGSTOP)
            t_stall = time.time()
            try:
                time.sleep(3.5)
                t_end = time.time()
                held = p.cmd('x-query-ft')
                self.wait_event(p, 'FT_WENT_LIVE', 15)
            finally:
                os.kill(b.get_pid(), signal.SIGCONT)
            time.sleep(2)
            res = self.net.client_result(client, stop)
        finally:
            dump.terminate()
            dump.wait()
        times = [float(ln.split()[0]) for ln in open(cap)
                 if re.match(r'\d+\.\d+ ', ln)]
        # Output acknowledged before the stall may still be on its way.
        grace = 0.3
        during = [t for t in times if t_stall + grace < t < t_end]
        after = [t for t in times if t > t_end]
        before = [t for t in times if t < t_stall]
        self.log.info('packets from the guest: %d before, %d during the '
                      'stall, %d after; %d bytes held', len(before),
                      len(during), len(after), held['held-bytes'])
        self.assertGreater(len(before), 10, 'the capture saw no traffic')
        self.assertGreater(held['held-bytes'], 0)
        self.assertEqual(during, [], 'packets left the primary while the '
                         'backup acknowledged nothing')
        self.assertGreater(len(after), 10)
        self.check_client(res)

    def test_bad_filter_config(self):
        """filter-ft-output refuses what cannot work: a VM whose log is not
        streamed, a multiqueue netdev."""
        mq = f'ftmq{os.getpid() % 10000}'
        for netdev, msg in (
                (f'tap,id=n0,ifname={self.net.taps[0]},script=no,'
                 'downscript=no', 'filter-ft-output needs a streamed '
                 'record/replay log'),
                (f'tap,id=n0,ifname={mq},script=no,downscript=no,queues=2',
                 'multiqueue is not supported')):
            vm, _ = self.make_vm('bad', self.guest_args(), args=[
                '-netdev', netdev,
                '-object', 'filter-ft-output,id=f,netdev=n0'])
            self.assert_refused(vm, msg)


if __name__ == '__main__':
    unittest.main()

#!/usr/bin/env python3
#
# The cap on held output (rrheldbytes, issue 14).  The guest floods UDP
# on a bridge; then the lock storage goes away and the backup is
# SIGSTOPped.  The primary loses its backup, cannot take the lock, and so
# holds every packet: without the cap its memory grows at the flood's
# rate.  With it the vCPU stalls at the cap: held-bytes and the process's
# RSS, sampled for 30 s, stay bounded.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import signal
import time
import unittest

from ft_test import BridgedCase

CAP = 2 * 1024 * 1024
SECONDS = 30


def rss_bytes(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise AssertionError(f'no VmRSS for {pid}')


class HeldCap(BridgedCase):

    timeout = 600
    cap = CAP

    def test_udp_flood_stays_under_the_cap(self):
        p, pcon, b, _ = self.make_ft_pair(
            self.guest_args(ip=self.net.GUEST_IP + '/24', work='ticker',
                            udp=f'{self.net.CLIENT_IP}:9'),
            rrx=f',rrheldbytes={self.cap}',
            primary_args=self.net.nic_args(0),
            backup_args=self.net.nic_args(1))
        pcon.wait(r'UDP flood to', 120, p)
        pcon.wait(r'TICK 2\b', 120, p)

        # The lock storage goes away, and the backup stops answering
        os.rename(self.lock_dir, self.lock_dir + '.gone')
        os.kill(b.get_pid(), signal.SIGSTOP)
        try:
            self.flood(p)
        finally:
            os.kill(b.get_pid(), signal.SIGCONT)

    def flood(self, p):
        deadline = time.monotonic() + 30
        while p.cmd('x-query-ft')['state'] != 'arbitrating':
            self.assertLess(time.monotonic(), deadline,
                            p.cmd('x-query-ft'))
            time.sleep(0.2)

        held, rss = [], []
        for _ in range(SECONDS):
            time.sleep(1)
            pi = p.cmd('x-query-ft')
            self.assertEqual(pi['state'], 'arbitrating', pi)
            held.append(pi['held-bytes'])
            rss.append(rss_bytes(p.get_pid()))
        # The figures, for the record (pytest -s shows them)
        print(f'\nheld-bytes over {SECONDS} s (cap {self.cap}): {held}')
        print(f'primary RSS MiB: {[r >> 20 for r in rss]}')
        print(f'x-query-ft: {pi}')
        self.assertEqual(pi['held-max'], self.cap)
        # The flood reached the cap, and the vCPU stalled there ...
        self.assertGreaterEqual(max(held), self.cap // 2, held)
        self.assertGreaterEqual(pi['held-cap-stalls'], 1, pi)
        # ... and held output stayed under it (plus what the NIC's queue
        # hands over in one go once the vCPU stopped)
        self.assertLessEqual(max(held), self.cap + 1024 * 1024, held)
        # The process does not grow meanwhile
        self.assertLess(max(rss) - rss[0], 32 * 1024 * 1024,
                        [r >> 20 for r in rss])


if __name__ == '__main__':
    unittest.main()

#!/usr/bin/env python3
#
# A backup whose replay falls behind fills its receive buffer
# (rrbufbytes).  It then stops reading the connection but keeps sending
# heartbeats: the primary must see a live, busy backup and be throttled
# (rrlagbytes), not declare it lost (issue 14).  The backup is held back
# with QMP stop while the host streams bulk data into the primary's guest
# (every received packet is logged).
#
# SPDX-License-Identifier: GPL-2.0-or-later

import socket
import threading
import time
import unittest

from ft_test import FTTestCase, free_tcp_port


class BackPressure(FTTestCase):

    timeout = 600

    def test_full_backup_keeps_heartbeats(self):
        port = free_tcp_port()

        def net(fwd):
            return ['-netdev', 'user,id=n0' + fwd,
                    '-device', 'virtio-net-pci,netdev=n0,romfile=',
                    '-object', 'filter-replay,id=fr0,netdev=n0']
        append = self.guest_args(work='echo,ticker', ip='10.0.2.15/24',
                                 gw='10.0.2.2')
        p, pcon, b, _ = self.make_pair(
            append,
            primary_args=net(f',hostfwd=tcp:127.0.0.1:{port}-:9'),
            backup_args=net(''),
            rrx=',rrlag=600000,rrlagbytes=1M,rrbufbytes=2M')
        pcon.wait(r'FT-READY', 120, p)

        stop = threading.Event()
        sent = [0]

        def bulk():
            chunk = b'B' * 65536
            while not stop.is_set():
                try:
                    with socket.create_connection(('127.0.0.1', port),
                                                  timeout=5) as s:
                        while not stop.is_set():
                            sent[0] += s.send(chunk)
                except OSError:
                    time.sleep(0.2)
        th = threading.Thread(target=bulk, daemon=True)
        self.addCleanup(stop.set)

        b.cmd('stop')
        th.start()
        throttle0 = p.cmd('x-query-ft')['throttle-ms']
        full = False
        end = time.monotonic() + 15
        while time.monotonic() < end:
            time.sleep(0.5)
            pi = p.cmd('x-query-ft')
            bi = b.cmd('x-query-ft')
            self.assertEqual(pi['state'], 'streaming',
                             f'the primary lost its busy backup: {pi}')
            self.assertEqual(bi['state'], 'streaming', bi)
            pending = bi['log-received'] - bi['log-consumed']
            full = full or pending > 1024 * 1024
        stop.set()
        pi = p.cmd('x-query-ft')
        self.log.info('sent %d bytes; primary %s; backup %s', sent[0], pi, bi)
        self.assertTrue(full, f'the backup buffer never filled: {bi}')
        # Back-pressure reached the primary's vCPU
        self.assertGreater(pi['throttle-ms'], throttle0 + 1000, pi)

        # Let the backup go on: it catches up, in lockstep
        b.cmd('cont')
        deadline = time.monotonic() + 120
        while True:
            bi = b.cmd('x-query-ft')
            pi = p.cmd('x-query-ft')
            self.assertEqual(pi['state'], 'streaming', pi)
            if bi['log-consumed'] >= pi['log-acked'] - 65536:
                break
            self.assertLess(time.monotonic(), deadline, (pi, bi))
            time.sleep(0.5)
        self.assertEqual(bi['digest']['mismatches'], 0, bi)


if __name__ == '__main__':
    unittest.main()

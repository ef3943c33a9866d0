#!/usr/bin/env python3
#
# A real Debian system under FT (scripts/build-debian-guest.sh): systemd,
# sshd and SQLite, booted from the shared disk (virtio-blk, blkreplay
# ft=on, a qcow2 overlay on the built image), its NIC on a bridge.  A
# client in its own network namespace keeps two ssh sessions open, one of
# them a SQLite shell committing a row per transaction; the primary is
# killed (kill -9) while it does.  Both sessions carry on with the
# backup, every row whose commit the client saw acknowledged is still
# there, and after a clean shutdown the root file system checks clean.
#
# The guest has two vCPUs (FT_DEBIAN_SMP, default 2), and the load runs
# FT_DEBIAN_LOAD_S seconds (default 40-60, at random) before the kill,
# the backup checked in lockstep (no digest mismatch) just before it.  A
# player that woke a halted vCPU early failed here within a minute.
#
# Copyright (c) 2026 The qemu-ft authors
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import random
import signal
import subprocess
import threading
import time
import unittest

from ft_test import BridgedCase
from ft_test import debian

SMP = int(os.environ.get('FT_DEBIAN_SMP', '2'))
LOAD_S = os.environ.get('FT_DEBIAN_LOAD_S')


class DebianTest(BridgedCase):

    timeout = 900

    def setUp(self):
        super().setUp()
        if not debian.built():
            self.skipTest('the Debian guest is not built '
                          '(scripts/build-debian-guest.sh)')

    def test_kill_primary(self):
        net = self.net
        img = debian.overlay(self.scratch('root.qcow2'))
        ip = net.GUEST_IP + '/24'
        t0 = time.monotonic()
        p, pcon, b, bcon = self.make_ft_pair(
            'unused', memory=debian.MEMORY, smp=SMP,
            primary_args=net.nic_args(0) + debian.debian_args(img, False, ip),
            backup_args=net.nic_args(1) + debian.debian_args(img, True, ip))
        pcon.wait(r'FT-READY', 600, p)
        self.log.info('Debian guest (-smp %d) ready %.1f s after launch',
                      SMP, time.monotonic() - t0)
        ssh = debian.Ssh(net.ns, net.GUEST_IP)
        db = debian.Sqlite(ssh)
        shell = subprocess.Popen(
            ssh.argv('while read l; do echo "got $l"; done'),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1)

        def say(word):
            shell.stdin.write(word + '\n')
            shell.stdin.flush()
            self.assertEqual(shell.stdout.readline().strip(), f'got {word}')

        say('before')
        # Rows committed one by one, before, across and after the kill
        stop = threading.Event()
        errors = []

        t = threading.Thread(target=db.insert_until, args=(stop, errors))
        t.start()
        try:
            rnd = random.Random(os.environ.get('FT_SEED'))
            time.sleep(float(LOAD_S) if LOAD_S else rnd.uniform(40, 60))
            info = b.cmd('x-query-ft')
            self.assertEqual((info['state'], info['digest']['mismatches']),
                             ('streaming', 0), info.get('error'))
            before = len(db.acked)
            os.kill(p.get_pid(), signal.SIGKILL)
            live = self.wait_event(b, 'FT_WENT_LIVE', 60)
            self.log.info('live after %s ms; %d rows acknowledged before',
                          live['data']['failover-ms'], before)
            end = time.monotonic() + 120
            while len(db.acked) < before + 10 and not errors:
                self.assertLess(time.monotonic(), end, 'no commits after')
                time.sleep(0.5)
        finally:
            stop.set()
            t.join(180)
        self.assertEqual(errors, [])
        self.assertGreater(before, 0)
        say('after')
        # Every acknowledged row, read in a new session
        rows = {int(x) for x in ssh.run(
            "sqlite3 /var/lib/ftdb/t.db 'SELECT n FROM t'").split()}
        missing = sorted(set(db.acked) - rows)
        self.assertEqual(missing, [], 'acknowledged rows lost')
        self.log.info('%d rows acknowledged, %d in the table',
                      len(db.acked), len(rows))
        self.assertEqual(db.close(), 0)
        shell.stdin.close()
        shell.wait(60)
        info = b.cmd('x-query-ft')
        self.assertEqual(info['state'], 'live')
        self.assertEqual(info['digest']['mismatches'], 0)
        # A clean shutdown, then the root file system checks clean
        subprocess.run(ssh.argv('systemctl poweroff'), capture_output=True,
                       timeout=120)
        self.assertEqual(self.wait_exit(b, 300), 0)
        rc, out = debian.fsck(img, self.scratch('fsck.raw'))
        self.log.info('e2fsck: %s', out)
        self.assertEqual(rc, 0, out)


if __name__ == '__main__':
    unittest.main()

#!/usr/bin/env python3
#
# Failover: a protected pair with a shared lock.  Real QEMU processes
# booting the real test guest; real faults (kill -9, SIGSTOP, a logging
# link taken down, the lock storage made unreachable).
#
# Copyright (c) 2026 The qemu-ft authors
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import random
import re
import shutil
import signal
import subprocess
import time
import unittest
import uuid

from ft_test import FailoverCase, Netns, splice_consoles, ticks
from ft_test.wire import lock_record

# kill -9 trials per workload in this suite; scripts/failover-series.sh
# (tests/bench/bench_failover.py) runs the long series.
KILLS = int(os.environ.get('FT_KILLS', '2'))


class FailoverTest(FailoverCase):

    def log_trial(self, r):
        self.log.info('trial: %s', r)

    def test_kill_primary_ticker(self):
        """kill -9 of the primary at random moments: the backup takes over."""
        rnd = random.Random(os.environ.get('FT_SEED'))
        for i in range(KILLS):
            with self.subTest(trial=i):
                self.log_trial(self.kill_primary_trial(
                    'ticker', rnd.uniform(0, 4)))
            self.next_trial(i, KILLS)

    def test_kill_primary_cpu(self):
        """kill -9 during the CPU job: the backup's result is right."""
        rnd = random.Random(os.environ.get('FT_SEED'))
        for i in range(KILLS):
            with self.subTest(trial=i):
                self.log_trial(self.kill_primary_trial(
                    'ticker,cpu', rnd.uniform(0, 3), cpu_iters=30))
            self.next_trial(i, KILLS)

    def test_sigstop_primary(self):
        """A hung primary: the backup goes live after the timeout; the old
        primary, continued, loses the lock and halts without output."""
        p, pcon, b, bcon = self.make_ft_pair(self.guest_args(work='ticker'))
        pcon.wait(r'TICK 2\b', 120, p)
        os.kill(p.get_pid(), signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            size = os.path.getsize(pcon.path)
            ev = self.wait_event(b, 'FT_PEER_LOST', 30)
            self.assertIn('no data or heartbeat', ev['data']['reason'])
            self.wait_event(b, 'FT_WENT_LIVE', 30)
            self.log.info('live after %.0f ms', (time.monotonic() - t0) * 1e3)
            bcon.wait(r'TICK \d+', 60, b)
        finally:
            os.kill(p.get_pid(), signal.SIGCONT)
        code = self.wait_exit(p, 30)
        self.assertEqual(code, 1, 'the old primary did not halt')
        self.assertEqual(os.path.getsize(pcon.path), size,
                         'the old primary let output out after SIGCONT')
        log = open(os.path.join(self.workdir, 'primary.log')).read()
        self.assertRegex(log, r'HALTING: lost the lock of generation 1 to '
                         r'backup')
        ticks(splice_consoles(pcon.text(), bcon.text())[0])
        self.assertIn('role backup', open(self.lock_path()).read())

    def test_kill_backup(self):
        """kill -9 of the backup: the primary wins the lock and runs on,
        its output flowing."""
        p, pcon, b, bcon = self.make_ft_pair(self.guest_args(work='ticker'))
        pcon.wait(r'TICK 2\b', 120, p)
        os.kill(b.get_pid(), signal.SIGKILL)
        self.wait_event(p, 'FT_PEER_LOST', 30)
        arb = self.wait_event(p, 'FT_ARBITRATION', 30)
        self.assertTrue(arb['data']['won'])
        self.wait_event(p, 'FT_WENT_LIVE', 30)
        n = len(re.findall(r'^TICK ', pcon.text(), re.M))
        pcon.wait(rf'TICK {n + 2}\b', 60, p)
        info = p.cmd('x-query-ft')
        self.assertEqual(info['state'], 'live')
        self.assertEqual(info['held-bytes'], 0)
        ticks(pcon.text())

    def test_output_held_until_acked(self):
        """The output rule: while the backup acknowledges nothing, no
        console byte leaves the primary; once the backup is declared lost
        and the primary won the lock, all of it does, in order."""
        p, pcon, b, bcon = self.make_ft_pair(
            self.guest_args(work='ticker'),
            rrx=',rrtimeout=4000,rrlag=3000')
        pcon.wait(r'TICK 2\b', 120, p)
        os.kill(b.get_pid(), signal.SIGSTOP)
        try:
            size = os.path.getsize(pcon.path)
            time.sleep(2.5)
            info = p.cmd('x-query-ft')
            self.log.info('held %d bytes', info['held-bytes'])
            self.assertEqual(info['state'], 'streaming')
            self.assertGreater(info['held-bytes'], 0)
            self.assertEqual(os.path.getsize(pcon.path), size,
                             'output left the primary unacknowledged')
            self.wait_event(p, 'FT_PEER_LOST', 10)
            self.wait_event(p, 'FT_WENT_LIVE', 10)
        finally:
            os.kill(b.get_pid(), signal.SIGCONT)
        n = len(re.findall(r'^TICK ', pcon.text(), re.M))
        pcon.wait(rf'TICK {n + 1}\b', 60, p)
        ticks(pcon.text())
        self.assertEqual(p.cmd('x-query-ft')['held-bytes'], 0)
        # The backup, continued, finds the primary holds the lock.
        self.assertEqual(self.wait_exit(b, 30), 1)

    def test_link_cut(self):
        """The logging link goes down: exactly one side ends up live."""
        if not shutil.which('ip') or os.geteuid() != 0:
            self.skipTest('needs root and iproute2')
        with Netns(os.getpid() % 10000) as ns:
            # Off loopback: under TLS (x509 with client certificates)
            p, pcon, b, bcon = self.make_ft_pair(
                self.guest_args(work='ticker'), host=ns.addrs, tls='x509',
                primary_wrapper=ns.wrapper(0), backup_wrapper=ns.wrapper(1),
                server_netns=ns.names[1])
            pcon.wait(r'TICK 2\b', 120, p)
            ns.link(False)
            for vm in (p, b):
                self.wait_event(vm, 'FT_PEER_LOST', 30)
            # The loser halts and exits; the winner is live.
            deadline = time.monotonic() + 30
            while p.is_running() and b.is_running() and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
            alive = [vm for vm in (p, b) if vm.is_running()]
            self.assertEqual(len(alive), 1, 'both sides still run')
            winner = alive[0]
            self.wait_event(winner, 'FT_WENT_LIVE', 30)
            self.assertEqual(winner.cmd('x-query-ft')['state'], 'live')
            self.assertEqual(winner.cmd('query-status')['status'], 'running')
            loser = p if winner is b else b
            self.assertEqual(self.wait_exit(loser, 10), 1)
            self.log.info('winner: %s', winner._name)
            wcon = pcon if winner is p else bcon
            n = len(re.findall(r'^TICK ', pcon.text() + bcon.text(), re.M))
            wcon.wait(rf'TICK {n + 1}\b', 60, winner)
            if winner is b:
                ticks(splice_consoles(pcon.text(), bcon.text())[0])
            else:
                ticks(pcon.text())
            ns.link(True)

    def test_storage_unavailable(self):
        """Nobody goes live while the lock storage is unreachable."""
        if os.geteuid() != 0:
            self.skipTest('needs root to mount over the lock directory')
        p, pcon, b, bcon = self.make_ft_pair(self.guest_args(work='ticker'))
        pcon.wait(r'TICK 2\b', 120, p)
        # Hide the lock directory behind a read-only mount.
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=64k', 'ftlock',
                        self.lock_dir], check=True)
        try:
            os.kill(p.get_pid(), signal.SIGKILL)
            self.wait_event(b, 'FT_PEER_LOST', 30)
            time.sleep(3)
            info = b.cmd('x-query-ft')
            self.assertEqual(info['state'], 'arbitrating')
            self.wait_runstate(b, ['paused'], 30)
            self.assertIsNone(b.event_wait('FT_WENT_LIVE', timeout=0))
        finally:
            subprocess.run(['umount', self.lock_dir], check=True)
        self.wait_event(b, 'FT_WENT_LIVE', 30)
        n = len(re.findall(r'^TICK ', pcon.text() + bcon.text(), re.M))
        bcon.wait(rf'TICK {n + 1}\b', 60, b)
        ticks(splice_consoles(pcon.text(), bcon.text())[0])
        log = open(os.path.join(self.workdir, 'backup.log')).read()
        self.assertIn('Read-only file system', log)

    def test_planned_switchover(self):
        """x-ft-go-live: the backup takes over, the primary halts."""
        p, pcon, b, bcon = self.make_ft_pair(self.guest_args(work='ticker'))
        pcon.wait(r'TICK 2\b', 120, p)
        r = p.qmp('x-ft-go-live')
        self.assertIn('this is the primary', r['error']['desc'])
        b.cmd('x-ft-go-live')
        r = b.qmp('x-ft-go-live')
        self.assertIn('already', r['error']['desc'])
        self.wait_event(b, 'FT_WENT_LIVE', 30)
        self.wait_event(p, 'FT_HALTED', 30)
        self.assertEqual(self.wait_exit(p, 10), 1)
        n = len(re.findall(r'^TICK ', pcon.text() + bcon.text(), re.M))
        bcon.wait(rf'TICK {n + 1}\b', 60, b)
        ticks(splice_consoles(pcon.text(), bcon.text())[0])
        r = b.qmp('x-ft-go-live')
        self.assertIn('already live', r['error']['desc'])

    def test_detach(self):
        """x-ft-detach on the primary: it runs on alone, the backup stops."""
        p, pcon, b, bcon = self.make_ft_pair(self.guest_args(work='ticker'))
        pcon.wait(r'TICK 2\b', 120, p)
        p.cmd('x-ft-detach')
        self.wait_event(p, 'FT_WENT_LIVE', 30)
        self.wait_runstate(b, ['paused'], 30)
        self.assertEqual(b.cmd('x-query-ft')['state'], 'ended')
        r = p.qmp('x-ft-detach')
        self.assertIn('no backup is attached', r['error']['desc'])
        n = len(re.findall(r'^TICK ', pcon.text(), re.M))
        pcon.wait(rf'TICK {n + 1}\b', 60, p)
        self.assertIn('role primary', open(self.lock_path()).read())
        # The stopped backup cannot be made to go live any more.
        r = b.qmp('x-ft-go-live')
        self.assertIn('error', r)

    def test_bad_lock_records(self):
        """A corrupt or foreign lock record stops the go-live, with a
        clear message, until an operator removes it."""
        p, pcon, b, bcon = self.make_ft_pair(self.guest_args(work='ticker'))
        pcon.wait(r'TICK 2\b', 120, p)
        # Another VM's valid record under this VM's name, then garbage.
        foreign = lock_record(str(uuid.uuid4()), 1)
        with open(self.lock_path(), 'w') as f:
            f.write(foreign)
        os.kill(p.get_pid(), signal.SIGKILL)
        self.wait_event(b, 'FT_PEER_LOST', 30)
        log = os.path.join(self.workdir, 'backup.log')
        seen = 0
        for content, msg in ((foreign, r'another VM'),
                             ('this is not a lock record\n', r'corrupt')):
            if content != foreign:
                # Only what the backup logs from now on counts, and the
                # record is replaced at once: rewritten in place, it would
                # be seen empty for a moment, which is corrupt too.
                seen = os.path.getsize(log)
                with open(self.lock_path() + '.new', 'w') as f:
                    f.write(content)
                os.rename(self.lock_path() + '.new', self.lock_path())
            deadline = time.monotonic() + 10
            while not re.search(r'cannot take the lock \(.*' + msg,
                                open(log, 'rb').read()[seen:].decode(
                                    errors='replace')):
                self.assertLess(time.monotonic(), deadline,
                                f'no error for a lock record of {msg}')
                time.sleep(0.1)
            info = b.cmd('x-query-ft')
            self.assertEqual(info['state'], 'arbitrating')
            self.assertRegex(info['error'], 'cannot take the lock: .*' + msg)
            # It plays what it received, then waits, stopped
            self.wait_runstate(b, ['paused'], 30)
            # Left alone for the operator
            self.assertEqual(open(self.lock_path()).read(), content)
        os.unlink(self.lock_path())
        self.wait_event(b, 'FT_WENT_LIVE', 30)
        self.assertIn('role backup', open(self.lock_path()).read())

    def test_startup_errors(self):
        """Bad lock configuration is refused at startup."""
        cases = [
            ([',rrlock=/nonexistent/ft-lock'],
             ['-uuid', '11111111-1111-1111-1111-111111111111'],
             'rrlock: /nonexistent/ft-lock: No such file or directory'),
            ([f',rrlock={self.workdir}'], [],
             'rrlock needs the VM\'s -uuid'),
        ]
        for rrx, args, msg in cases:
            vm, _ = self.make_vm('bad', self.guest_args(), rr='record',
                                 icount_extra=',rrchardev=ftlog' + rrx[0],
                                 args=['-chardev', 'socket,id=ftlog,'
                                       'host=127.0.0.1,port=1', *args])
            self.assert_refused(vm, msg)


if __name__ == '__main__':
    unittest.main()

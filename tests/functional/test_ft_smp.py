#!/usr/bin/env python3
#
# Several vCPUs under FT (-smp 2 and 4): lockstep with every vCPU busy
# (guest/smpwork.c: threads pinned one per vCPU, sharing memory, a mutex
# and an atomic counter), a change to one vCPU's registers on the backup
# found by the digests, and kill -9 of the primary at -smp 2; and
# lockstep at -smp 2 with the vCPUs mostly halted, woken by a stream of
# network interrupts.  Real QEMU
# processes booting the real test guest; the register is changed through
# QEMU's own gdbstub, by gdb.
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

from ft_test import BridgedCase, FailoverCase, free_tcp_port, \
    splice_consoles, ticks
from ft_test.failover import kill_primary_trial
from ft_test.protect import protect, start_joiner

# How long the lockstep tests run once every vCPU is busy
SECONDS = int(os.environ.get('FT_SMP_SECONDS', '15'))
# kill -9 trials at -smp 2 (test_ft_network.py and test_ft_disk.py have
# their own, under the TCP and ext4 workloads)
KILLS = int(os.environ.get('FT_SMP_KILLS', '1'))

EPOCH = re.compile(r'^SMP epoch (\d+) rounds=(\d+) result=([0-9a-f]+) '
                   r'(ok|BAD)\r?$', re.M)


def smp_epochs(text, cpus, rounds=200):
    """Check the smpwork epochs in a console's @text (one thread per vCPU,
    @rounds rounds each): every one complete (no lost update), all with
    the same result.  Returns how many."""
    epochs = EPOCH.findall(text)
    for n, done, result, ok in epochs:
        if ok != 'ok' or int(done) != cpus * rounds:
            raise AssertionError(f'epoch {n}: {done} rounds, {ok}')
        if result != epochs[0][2]:
            raise AssertionError(f'epoch {n}: result {result}, '
                                 f'epoch 1 had {epochs[0][2]}')
    return len(epochs)


class SmpTest(FailoverCase):

    def busy_pair(self, cpus, **kw):
        """A pair at -smp @cpus whose guest keeps every vCPU busy."""
        append = self.guest_args(work='ticker,smp', smp_epochs=0)
        p, pcon, b, bcon = self.make_pair(append, smp=cpus, **kw)
        pcon.wait(rf'SMP start threads={cpus} cpus={cpus} ', 300, p)
        return p, pcon, b, bcon

    def lockstep(self, cpus):
        """-smp @cpus in lockstep for SECONDS: no digest mismatch (the
        digests cover every vCPU), the workload's results right on both
        sides, the backup's console a prefix of the primary's."""
        p, pcon, b, bcon = self.busy_pair(cpus)
        first = None
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            time.sleep(2)
            bi, _ = self.ft(b)
            pi, _ = self.ft(p)
            self.assertEqual(pi['state'], 'streaming', pi)
            self.assertEqual(bi['state'], 'streaming', bi)
            self.assertEqual(bi['digest']['mismatches'], 0, bi)
            first = first or bi['digest']['checks']
        checks = bi['digest']['checks'] - first
        self.log.info('-smp %d: %d digest checks in %d s, lag %s ms',
                      cpus, checks, SECONDS, bi.get('lag-ms'))
        self.assertGreater(checks, SECONDS)
        ptext, btext = pcon.text(), bcon.text()
        self.assertGreaterEqual(smp_epochs(ptext, cpus), 2, ptext[-2000:])
        smp_epochs(btext, cpus)
        self.assertTrue(ptext.startswith(btext[:len(btext) - 200]),
                        'backup console is not a prefix of the primary')

    def test_lockstep_smp2(self):
        self.lockstep(2)

    def test_lockstep_smp4(self):
        self.lockstep(4)

    @unittest.skipUnless(shutil.which('gdb'), 'needs gdb')
    def test_vcpu_state_differs(self):
        """Change one register of the backup's second vCPU, through the
        gdbstub: the digests find it.  With isolcpus=1 no task runs on the
        second vCPU, so nothing restores its SSE registers: the change
        stays, and changes nothing the guest does (only a digest that
        covers that vCPU can find it)."""
        port = free_tcp_port()
        append = self.guest_args(work='ticker') + ' isolcpus=1'
        p, pcon, b, bcon = self.make_pair(
            append, smp=2, backup_args=['-gdb', f'tcp:127.0.0.1:{port}'])
        pcon.wait(r'TICK 2\b', 300, p)
        bi, _ = self.ft(b)
        self.assertEqual(bi['digest']['mismatches'], 0, bi)
        gdb = subprocess.run(
            ['gdb', '-nx', '-batch', '-ex', 'set pagination off',
             '-ex', f'target remote 127.0.0.1:{port}',
             '-ex', 'thread 2', '-ex', 'p $xmm15.v4_int32',
             '-ex', 'set $xmm15.v4_int32[0] = $xmm15.v4_int32[0] ^ 1',
             '-ex', 'p $xmm15.v4_int32', '-ex', 'detach'],
            capture_output=True, text=True, timeout=60)
        self.log.info('gdb: %s %s', gdb.stdout, gdb.stderr)
        self.assertEqual(gdb.returncode, 0, gdb.stderr)
        values = re.findall(r'^\$\d+ = \{(.*)\}$', gdb.stdout, re.M)
        self.assertEqual(len(values), 2, gdb.stdout)
        self.assertNotEqual(values[0], values[1])
        ev = self.wait_event(b, 'FT_DIVERGENCE', 60)
        self.log.info('divergence: %s', ev)
        bi, _ = self.ft(b)
        self.assertEqual(bi['state'], 'diverged')
        self.assertIn('cpu state differs', bi['digest']['mismatch'])
        # The primary runs on, unprotected
        self.wait_event(p, 'FT_PEER_LOST', 30)
        n = len(pcon.lines())
        pcon.wait(r'TICK \d+', 60, p)
        time.sleep(3)
        self.assertGreater(len(pcon.lines()), n)

    def test_kill_primary_smp2(self):
        """kill -9 of a -smp 2 primary with both vCPUs busy: the backup
        goes live, and the workload's epochs carry on, right, across."""
        rnd = random.Random(os.environ.get('FT_SEED'))
        for i in range(KILLS):
            with self.subTest(trial=i):
                self.make_ft_pair(self.guest_args(work='ticker,smp',
                                                  smp_epochs=0), smp=2)
                p, pcon, b, bcon = self.pair
                pcon.wait(r'^SMP epoch 1 ', 300, p)
                r = kill_primary_trial(self.pair, 'ticker',
                                       rnd.uniform(0, 3))
                self.log.info('trial: %s', r)
                n = smp_epochs(pcon.text(), 2)
                bcon.wait(rf'^SMP epoch {n + 2} ', 300, b)
                stream, _ = splice_consoles(pcon.text(), bcon.text())
                ticks(stream)
                self.assertGreaterEqual(smp_epochs(stream, 2), n + 2)
            self.next_trial(i, KILLS)

    def test_reprotect_smp2(self):
        """Restoring redundancy at -smp 2: the primary is killed, a new
        backup joins the VM that went live (x-ft-protect), keeps in
        lockstep with both vCPUs busy (it starts from the vCPU the live
        side's log names, in the migrated replay state), and takes over
        when that one is killed in turn."""
        append = self.guest_args(work='ticker,smp', smp_epochs=0)
        p, pcon, b, bcon = self.make_ft_pair(append, smp=2)
        pcon.wait(r'^SMP epoch 1 ', 300, p)
        os.kill(p.get_pid(), signal.SIGKILL)
        self.wait_event(b, 'FT_WENT_LIVE', 60)
        j, jcon, port, mig = start_joiner(
            self.wd, 'backup2', append, self.pair.lock_dir,
            self.pair.vm_uuid, args=['-smp', '2'])
        data = protect(b, port, mig)
        self.log.info('protected: %s', data)
        first = self.ft(j)[0]['digest']['checks']
        time.sleep(15)
        info = self.ft(j)[0]
        self.assertEqual(info['state'], 'streaming', info)
        self.assertEqual(info['digest']['mismatches'], 0, info)
        self.assertGreater(info['digest']['checks'], first, info)
        n = smp_epochs(splice_consoles(pcon.text(), bcon.text())[0], 2)
        os.kill(b.get_pid(), signal.SIGKILL)
        self.wait_event(j, 'FT_WENT_LIVE', 60)
        jcon.wait(rf'^SMP epoch {n + 2} ', 300, j)
        stream, _ = splice_consoles(pcon.text(), bcon.text())
        stream, _ = splice_consoles(stream, jcon.text())
        ticks(stream)
        self.assertGreaterEqual(smp_epochs(stream, 2), n + 2)
        self.assertEqual(self.ft(j)[0]['digest']['mismatches'], 0)


class SmpNetTest(BridgedCase):

    def test_lockstep_net_smp2(self):
        """-smp 2, the guest mostly idle: its vCPUs halt, and TCP echo
        traffic wakes them with interrupts, some arriving in the STI
        shadow of the kernel's "sti; hlt".  For SECONDS, no digest
        mismatch and every echoed byte right.  A player that woke a
        halted vCPU before the recorder did diverged here in 10-20 s."""
        net = self.net
        p, pcon, b, bcon = self.make_ft_pair(
            self.guest_args(work='echo,ticker', ip=net.GUEST_IP + '/24'),
            smp=2, primary_args=net.nic_args(0),
            backup_args=net.nic_args(1))
        pcon.wait(r'FT-READY', 300, p)
        client = net.client(self.workdir, conns=4)
        first = None
        try:
            end = time.monotonic() + SECONDS
            while time.monotonic() < end:
                time.sleep(2)
                bi, _ = self.ft(b)
                self.assertEqual(bi['state'], 'streaming', bi)
                self.assertEqual(bi['digest']['mismatches'], 0, bi)
                first = first or bi['digest']['checks']
        finally:
            res = net.client_result(*client)
        for e in res['echo']:
            self.assertIsNone(e['error'], e)
            self.assertGreater(e['verified'], 0, e)
        self.log.info('-smp 2 under echo load: %d digest checks, %d MiB '
                      'echoed', bi['digest']['checks'] - first,
                      sum(e['verified'] for e in res['echo']) >> 20)
        self.assertGreater(bi['digest']['checks'] - first, SECONDS)


if __name__ == '__main__':
    unittest.main()

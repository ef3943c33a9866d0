#!/usr/bin/env python3
#
# Baseline: record/replay of the test guest on the project's device set.
#
# q35, 1 vCPU, -cpu Nehalem, an AHCI ide-hd behind blkreplay, virtio-net
# behind filter-replay.  The recorded run uses the disk (write/verify
# loops), the network (a host client streams data through the guest's echo
# server) and timers (ticker, CPU job).  The replay must reproduce the same
# console output and the same final machine state: a digest of all guest
# RAM, the CPU registers and the instruction count where the log ends, and the
# same disk image contents.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import shutil
import time

from ft_test import WORKLOADS, Echo, FTTestCase, free_tcp_port, \
    sha256_file
from ft_test.workloads import disk_args, user_net_args

MEM_MB = 256


class ReplayBaseline(FTTestCase):

    def vm_args(self, disk, port):
        return disk_args(disk) + user_net_args(port)

    def guest_cmdline(self, **extra):
        return WORKLOADS['baseline'].append(**extra)

    def echo_traffic(self, port, nbytes=65536):
        """Stream @nbytes through the guest's echo server and check them."""
        echo = Echo('127.0.0.1', port, nbytes=nbytes, timeout=60)
        echo.run()
        self.assertIsNone(echo.error,
                          'echoed stream differs from what was sent')
        self.assertEqual(echo.verified, nbytes)

    def wait_connections_closed(self, vm, timeout=60):
        """Wait until slirp has no TCP connection that can still send the
        guest a packet: one in flight at the stop point makes the state
        there depend on the replay's timing (see test_replay_reproduces_state)."""
        quiet = ('HOST_FORWARD', 'TIME_WAIT', 'CLOSED')
        end = time.monotonic() + timeout
        while True:
            out = vm.cmd('human-monitor-command',
                         **{'command-line': 'info usernet'})
            busy = [x.strip() for x in out.splitlines()
                    if x.strip().startswith('TCP[') and
                    not any(f'[{q}]' in x for q in quiet)]
            if not busy:
                return
            self.assertLess(time.monotonic(), end,
                            f'connections still open: {busy}')
            time.sleep(0.1)

    def record(self, disk, log, append):
        """Record a run; stop it once the guest's workloads are done, take
        the digest there and quit, so that the log ends at that point."""
        port = free_tcp_port()
        vm, con = self.make_vm('record', append, rr='record', rrfile=log,
                               args=self.vm_args(disk, port), memory=MEM_MB)
        t0 = time.monotonic()
        vm.launch()
        con.wait(r'^FT-READY', 120, vm)
        if 'echo' in append:
            self.echo_traffic(port)
            self.wait_connections_closed(vm)
        con.wait(r'^FT-DONE', self.timeout, vm)
        vm.cmd('stop')
        elapsed = time.monotonic() - t0
        digest = self.machine_digest(vm, MEM_MB)
        self.shutdown_checked(vm)
        return con, digest, elapsed

    def replay(self, disk, log, append, timeout):
        """Replay the whole log and take the digest where it ends.

        Not at a replay-break on the recorded instruction count: the
        recorder was stopped asynchronously, and it may have taken events
        logged at that very count (an interrupt delivered as the stop
        kicked its vCPU, a packet) before it stopped.  A break stops the
        player as it reaches the count, before or after such events
        depending on timing.  The end of the log is the same place in the
        event stream for both: the player pauses there ("replay file is
        over"), or on the recorder's quit, which it replays as a shutdown
        (-action shutdown=pause)."""
        vm, con = self.make_vm('replay', append, rr='replay', rrfile=log,
                               args=self.vm_args(disk, None) +
                               ['-S', '-action', 'shutdown=pause'],
                               memory=MEM_MB)
        t0 = time.monotonic()
        vm.launch()
        vm.cmd('cont')
        try:
            self.wait_runstate(vm, ['paused', 'shutdown'], timeout)
        except AssertionError:
            return con, None, time.monotonic() - t0
        elapsed = time.monotonic() - t0
        digest = self.machine_digest(vm, MEM_MB)
        self.shutdown_checked(vm)
        return con, digest, elapsed

    def compare(self, rec, rep):
        """List the ways the replay differs from the recording."""
        (rcon, rdig, _), (pcon, pdig, _) = rec, rep
        diffs = []
        if rcon.text() != pcon.text():
            diffs.append('console output')
        if pdig is None:
            diffs.append('replay did not reach the end of the log')
        else:
            for k in ('icount', 'registers', 'ram'):
                if rdig[k] != pdig[k]:
                    diffs.append(k)
        return diffs

    def record_and_replay(self):
        rec_disk, rep_disk = self.setup_disks()
        log = self.scratch('rr.log')
        append = self.guest_cmdline()
        rec = self.record(rec_disk, log, append)
        lines = rec[0].lines()
        # The recorded run really exercised disk, network and timers.
        self.assertIn('TICK 8', lines)
        self.assertIn('DISK verify ok loop=2', ' '.join(lines))
        self.assertTrue(any(x.startswith('CPU result ') for x in lines))
        self.assertFalse([x for x in lines if 'FAIL' in x or 'FT-ERROR' in x])
        rep = self.replay(rep_disk, log, append, timeout=3 * rec[2] + 60)
        return rec, rep, log, rec_disk, rep_disk

    def setup_disks(self):
        pristine = self.make_disk('pristine.img', 8)
        rec_disk = self.scratch('record.img')
        rep_disk = self.scratch('replay.img')
        shutil.copy(pristine, rec_disk)
        shutil.copy(pristine, rep_disk)
        return rec_disk, rep_disk

    def test_replay_reproduces_state(self):
        """Record a run, replay the whole log and compare registers, all
        of RAM, icount, console and disk where it ends."""
        rec, rep, log, rec_disk, rep_disk = self.record_and_replay()
        diffs = self.compare(rec, rep)
        self.assertEqual(diffs, [], 'replay differs from the recording')
        self.assertEqual(sha256_file(rec_disk), sha256_file(rep_disk),
                         'disk contents differ after replay')
        self.log.warning('record %.1fs, replay %.1fs (ratio %.2f), '
                         'log %d bytes, icount %s',
                         rec[2], rep[2], rep[2] / rec[2],
                         len(open(log, 'rb').read()), rec[1]['icount'])

    def test_comparison_detects_a_different_run(self):
        """Negative control: the same log replayed by a VM started with a
        different kernel argument must be reported as different."""
        rec_disk, rep_disk = self.setup_disks()
        log = self.scratch('rr.log')
        append = self.guest_cmdline(work='ticker', ticks=3)
        rec = self.record(rec_disk, log, append)
        rep = self.replay(rep_disk, log, append + ' ft.cpu_iters=21',
                          timeout=1.5 * rec[2] + 15)
        diffs = self.compare(rec, rep)
        self.log.warning('different run detected as: %s', diffs)
        self.assertNotEqual(diffs, [],
                            'a run with different input was not detected')


if __name__ == '__main__':
    import unittest
    unittest.main()

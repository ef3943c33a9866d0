# QMP quit on each side of a pair, and on a backup that went live: QEMU
# exits 0, with the channel torn down in one place (ft_channel_free())
# after its threads are joined, and the filter-ft-output filters finalized
# after it.  Run with an ASan+UBSan build (FT_SANITIZE=1 scripts/test.sh,
# or FT_QEMU=build/qemu-asan/qemu-system-x86_64) the log must also hold
# no sanitizer report: a use after free at exit is what this guards.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import signal
import unittest

from ft_test import BridgedCase

REPORTS = ('ERROR: AddressSanitizer', 'runtime error:',
           'ERROR: LeakSanitizer', 'Segmentation fault')


class QuitTest(BridgedCase):

    def pair(self):
        """A pair with filter-ft-output on its NIC and held console."""
        p, pcon, b, bcon = self.make_ft_pair(
            self.guest_args(ip=self.net.GUEST_IP + '/24', work='ticker'),
            primary_args=self.net.nic_args(0),
            backup_args=self.net.nic_args(1))
        pcon.wait(r'TICK 2\b', 120, p)
        return p, b

    def quit(self, vm):
        """QMP quit: exit status 0 and a clean log."""
        vm.cmd('quit')
        vm.wait(timeout=60)
        log = vm.get_log() or ''
        self.assertEqual(vm.exitcode(), 0, log)
        for r in REPORTS:
            self.assertNotIn(r, log)
        self.vms.remove(vm)

    def test_quit_primary(self):
        p, b = self.pair()
        self.quit(p)

    def test_quit_backup(self):
        p, b = self.pair()
        self.quit(b)

    def test_quit_live(self):
        """A backup that went live after kill -9 of its primary."""
        p, b = self.pair()
        os.kill(p.get_pid(), signal.SIGKILL)
        self.wait_event(b, 'FT_WENT_LIVE', 60)
        self.quit(b)


if __name__ == '__main__':
    unittest.main()

#!/usr/bin/env python3
#
# The RTC of a fault-tolerant VM (patches "rtc: ...").
#
# - It runs on the guest's virtual clock by default: on the host clock,
#   every main loop round of the primary put a checkpoint and host clock
#   reads in the log, which the backup's main loop had to take one by
#   one.  Seen from outside: while the VM is stopped its virtual clock
#   stands still, and so must its RTC (QOM /machine rtc-time); an
#   explicit -rtc clock=host is kept.
# - Its start date comes through the log: a backup whose host clock is a
#   day off (faketime) starts its RTC on the primary's date, and replays
#   in lockstep.  Before, it took its own date, and a pair on one host
#   diverged during boot when its two processes started on either side
#   of a second (5 in 150 pairs).
# - -rtc clock=rt, which no log can replay, is refused.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import calendar
import glob
import time
import unittest

from ft_test import FTTestCase

STOPPED_S = 3
# libfaketime (Debian's faketime), preloaded by env, which execs QEMU:
# the faketime command would stay QEMU's parent, and killing the pair
# would leave QEMU running.
LIBFAKETIME = glob.glob('/usr/lib/*/faketime/libfaketime.so.1')
# The backup's host is a day ahead; its monotonic clock is left alone,
# as on a real host whose wall clock is off.
SKEWED_HOST = ('env', f'LD_PRELOAD={LIBFAKETIME[0]}' if LIBFAKETIME else '',
               'FAKETIME=+1d', 'FAKETIME_DONT_FAKE_MONOTONIC=1')


def rtc_seconds(vm):
    t = vm.cmd('qom-get', path='/machine', property='rtc-time')
    return calendar.timegm((t['tm_year'] + 1900, t['tm_mon'] + 1,
                            t['tm_mday'], t['tm_hour'], t['tm_min'],
                            t['tm_sec']))


class RtcClockTest(FTTestCase):

    def rtc_advance_while_stopped(self, rtc_args=()):
        """Seconds the RTC of a VM recording alone (rralone=on: a primary
        with no backup yet) moves while the VM is stopped STOPPED_S s."""
        vm, con = self.make_vm('alone', self.guest_args(work='ticker'),
                               rr='record',
                               icount_extra=',rralone=on,rrinsecure=on',
                               args=list(rtc_args))
        vm.launch()
        con.wait(r'TICK 2\b', 120, vm)
        vm.cmd('stop')
        before = rtc_seconds(vm)
        time.sleep(STOPPED_S)
        after = rtc_seconds(vm)
        vm.cmd('cont')
        con.wait(r'TICK 4\b', 120, vm)
        return after - before

    def test_rtc_follows_the_virtual_clock(self):
        self.assertLessEqual(self.rtc_advance_while_stopped(), 1,
                             'the RTC of a stopped FT VM moved on: it is '
                             'not on the virtual clock')

    def test_explicit_host_clock_is_kept(self):
        self.assertGreaterEqual(
            self.rtc_advance_while_stopped(['-rtc', 'clock=host']),
            STOPPED_S - 1, '-rtc clock=host was not kept')

    def assert_lockstep_with_skewed_backup(self, rtc_args=()):
        """A pair whose backup's host clock is a day ahead: both RTCs
        show the primary's date, and the backup's digests match while
        the guest boots and ticks."""
        self.assertTrue(LIBFAKETIME, 'libfaketime is not installed (it is '
                        'in scripts/install-deps.sh)')
        p, pcon, b, bcon = self.make_pair(
            self.guest_args(work='ticker'), backup_wrapper=SKEWED_HOST,
            primary_args=list(rtc_args), backup_args=list(rtc_args))
        pcon.wait(r'TICK 6\b', 120, p)
        # Without the fix it diverged during boot, well before this
        self.assertNotEqual(b.cmd('x-query-ft')['state'], 'diverged',
                            'the backup diverged: it took its own '
                            'host\'s date for the RTC')
        bcon.wait(r'TICK 6\b', 120, b)
        # The backup replays slightly behind: a second apart at most.
        self.assertLessEqual(abs(rtc_seconds(p) - rtc_seconds(b)), 1,
                             'the backup took its own host\'s date')
        info = b.cmd('x-query-ft')
        self.assertEqual(info['state'], 'streaming')
        self.assertGreater(info['digest']['checks'], 0)
        self.assertEqual(info['digest']['mismatches'], 0)

    def test_skewed_backup_host(self):
        self.assert_lockstep_with_skewed_backup()

    def test_skewed_backup_host_with_base_date(self):
        """-rtc base=<date> on the host clock keeps an offset from the
        host's date, which must be the primary's too."""
        self.assert_lockstep_with_skewed_backup(
            ['-rtc', 'base=2020-01-01T00:00:00,clock=host'])

    def test_realtime_rtc_refused(self):
        vm, _ = self.make_vm('rt', self.guest_args(work='ticker'),
                             rr='record',
                             icount_extra=',rralone=on,rrinsecure=on',
                             args=['-rtc', 'clock=rt'])
        self.assert_refused(vm, 'not supported with -rtc clock=rt')


if __name__ == '__main__':
    unittest.main()

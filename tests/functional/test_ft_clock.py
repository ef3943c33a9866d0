#!/usr/bin/env python3
#
# The RTC of a fault-tolerant VM runs on the guest's virtual clock by
# default (patch "rtc: keep a fault-tolerant VM's RTC on the virtual
# clock"): on the host clock, every main loop round of the primary put a
# checkpoint and host clock reads in the log, which the backup's main
# loop had to take one by one.  Seen from outside: while the VM is
# stopped its virtual clock stands still, and so must its RTC (QOM
# /machine rtc-time); an explicit -rtc clock=host is kept; a pair with
# the default replays in lockstep.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import calendar
import time
import unittest

from ft_test import FTTestCase

STOPPED_S = 3


class RtcClockTest(FTTestCase):

    def rtc_seconds(self, vm):
        t = vm.cmd('qom-get', path='/machine', property='rtc-time')
        return calendar.timegm((t['tm_year'] + 1900, t['tm_mon'] + 1,
                                t['tm_mday'], t['tm_hour'], t['tm_min'],
                                t['tm_sec']))

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
        before = self.rtc_seconds(vm)
        time.sleep(STOPPED_S)
        after = self.rtc_seconds(vm)
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

    def test_pair_in_lockstep(self):
        """A pair with the default RTC: the backup's digests match for a
        few seconds of ticks."""
        p, pcon, b, bcon = self.make_pair(self.guest_args(work='ticker'))
        pcon.wait(r'TICK 6\b', 120, p)
        bcon.wait(r'TICK 6\b', 120, b)
        info = b.cmd('x-query-ft')
        self.assertGreater(info['digest']['checks'], 0)
        self.assertEqual(info['digest']['mismatches'], 0)


if __name__ == '__main__':
    unittest.main()

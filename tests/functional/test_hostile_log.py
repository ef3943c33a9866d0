#!/usr/bin/env python3
#
# A replay log is input: a corrupt or hostile one must be refused with a
# clear error naming the event and the instruction count, never an assert,
# a buffer overflow or a huge allocation (issue 14).  A short log is
# recorded from the test guest with rr=record,rrfile= (no FT), bytes in it
# are patched, and it is replayed with rr=replay,rrfile=.  When the
# ASan+UBSan build exists (build/qemu-asan), the same cases run against it
# too and must leave no sanitizer report.
#
# SPDX-License-Identifier: GPL-2.0-or-later

from ft_test.replaylog import CORRUPTIONS, LogCase


class HostileLog(LogCase):

    def replay(self, name, log, qemu=None):
        vm, _ = self.make_vm(name, self.record_append(), rr='replay',
                             rrfile=log, args=self.record_args(), qemu=qemu)
        vm.set_qmp_monitor(False)
        vm.launch()
        vm.wait(timeout=600 if qemu else 120)
        return vm.exitcode(), vm.get_log() or ''

    def check(self, name, patch, expect):
        """Replay the crafted log with the build under test, and with the
        ASan+UBSan build when there is one."""
        log = self.crafted(name, patch)
        for qemu in self.binaries(name):
            tag = name + ('-asan' if qemu else '')
            rc, out = self.replay(tag, log, qemu)
            self.assert_clean(tag, rc, out)
            self.assertNotEqual(rc, 0, f'{tag}: the corrupt log was '
                                'replayed as if valid')
            self.assertRegex(out, expect, f'{tag}: exit {rc}:\n{out[-3000:]}')

    # -- the cases (ft_test.replaylog.CORRUPTIONS) ----------------------

    def test_random_array_too_long(self):
        self.check('random4096', *CORRUPTIONS['random4096'])

    def test_random_array_4gib(self):
        self.check('random4g', *CORRUPTIONS['random4g'])

    def test_char_read_4gib(self):
        self.check('charread4g', *CORRUPTIONS['charread4g'])

    def test_char_read_bad_device(self):
        self.check('charreadid', *CORRUPTIONS['charreadid'])

    def test_char_write_bad_offset(self):
        self.check('charwrite', *CORRUPTIONS['charwrite'])

    def test_instruction_count_negative(self):
        self.check('insncount', *CORRUPTIONS['insncount'])


if __name__ == '__main__':
    import unittest
    unittest.main()

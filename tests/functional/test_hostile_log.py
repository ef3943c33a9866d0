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

import os
import shutil
import struct

from ft_test import BUILD, FTTestCase
from ft_test.wire import REPLAY_VERSION

QEMU_ASAN = os.environ.get('FT_QEMU_ASAN', os.path.join(
    BUILD, 'qemu-asan', 'qemu-system-x86_64'))

# Event ids of REPLAY_VERSION 0xe0200d (replay/replay-internal.h)
EV_INSTRUCTION = 0
EV_ASYNC = 3                # + ReplayAsyncEventKind
ASYNC_BH, ASYNC_BH_ONESHOT, ASYNC_INPUT, ASYNC_INPUT_SYNC, \
    ASYNC_CHAR_READ, ASYNC_BLOCK, ASYNC_NET = range(7)
EV_SHUTDOWN, EV_SHUTDOWN_LAST = 10, 21
EV_CHAR_WRITE = 22
EV_CHAR_READ_ALL = 23
EV_CHAR_READ_ALL_ERROR = 24
EV_AUDIO_OUT = 25
EV_AUDIO_IN = 26
EV_RANDOM = 27
EV_CLOCK, EV_CLOCK_LAST = 28, 29
EV_CHECKPOINT, EV_CHECKPOINT_LAST = 30, 38
EV_DIGEST = 39
EV_END = 40
HEADER_SIZE = 12

SIGNAL_EXITS = (134, 139)   # a shell's view of SIGABRT and SIGSEGV


def parse_log(data):
    """[(event id, offset of the event's first payload byte)] of a log
    without disks, input devices or audio, whose events have fixed
    layouts."""
    assert struct.unpack_from('>I', data, 0)[0] == REPLAY_VERSION, \
        'not a log of this replay version'
    events = []
    pos = HEADER_SIZE

    def array(p):
        return p + 4 + struct.unpack_from('>I', data, p)[0]

    while pos < len(data):
        ev = data[pos]
        p = pos + 1
        events.append((ev, p))
        if ev == EV_INSTRUCTION:
            p += 4
        elif ev in (EV_ASYNC + ASYNC_BH, EV_ASYNC + ASYNC_BH_ONESHOT,
                    EV_AUDIO_OUT) or EV_CLOCK <= ev <= EV_CLOCK_LAST:
            p += 8
        elif ev == EV_ASYNC + ASYNC_CHAR_READ:
            p = array(p + 1)
        elif ev == EV_ASYNC + ASYNC_NET:
            p = array(p + 5)
        elif ev == EV_CHAR_WRITE:
            p += 8
        elif ev == EV_CHAR_READ_ALL:
            p = array(p)
        elif ev == EV_CHAR_READ_ALL_ERROR:
            p += 4
        elif ev == EV_RANDOM:
            p = array(p + 4)
        elif ev == EV_DIGEST:
            p = array(p + 8)
        elif ev == EV_END:
            break
        elif ev in (1, 2, EV_ASYNC + ASYNC_INPUT_SYNC) or \
                EV_SHUTDOWN <= ev <= EV_SHUTDOWN_LAST or \
                EV_CHECKPOINT <= ev <= EV_CHECKPOINT_LAST:
            pass
        else:
            raise AssertionError(f'event {ev} at {pos}: not parsed here')
        pos = p
    return events


class LogCase(FTTestCase):
    """A short log recorded from the test guest, with RANDOM, CHAR_READ
    and CHAR_WRITE events, for tests to corrupt.  No tests of its own."""

    timeout = 900
    # One recording serves all cases: recorded by the first test to run.
    _log = None

    def record(self):
        cls = type(self)
        if cls._log is not None:
            return cls._log
        log = self.scratch('rr.log')
        rec, rcon = self.make_vm('record', self.record_append(), rr='record',
                                 rrfile=log, args=self.record_args())
        rec.set_qmp_monitor(False)
        rec.launch()
        rec.wait(timeout=300)
        self.assertEqual(rec.exitcode(), 0, rec.get_log())
        self.assertIn('FT-DONE', rcon.text())
        keep = os.path.join(os.path.dirname(self.workdir),
                            'hostile-log.rr.log')
        shutil.copyfile(log, keep)
        cls._log = keep
        return keep

    def record_append(self):
        return self.guest_args(work='ticker', ticks='1', poweroff='1')

    def record_args(self):
        # -cpu max: RDRAND, so the guest's log has RANDOM events.  A
        # second serial port reads a file: CHAR_READ events.  The first
        # one's output: CHAR_WRITE events.
        infile = self.scratch('ttyS1.in')
        if not os.path.exists(infile):
            with open(infile, 'wb') as f:
                f.write(b'hostile\n')
        return ['-cpu', 'max', '-net', 'none',
                '-chardev', f'file,id=ser1,path={self.scratch("ttyS1.out")},'
                f'input-path={infile}',
                '-serial', 'chardev:ser1']

    def crafted(self, name, patch):
        """A copy of the recorded log with @patch(bytearray, events)
        applied; returns its path and the patched event's id."""
        data = bytearray(open(self.record(), 'rb').read())
        events = parse_log(bytes(data))
        path = self.scratch(name + '.rr')  # not .log: QEMUMachine's own
        patch(data, events)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    @staticmethod
    def first(events, ev, nth=0):
        found = [p for e, p in events if e == ev]
        if len(found) <= nth:
            raise AssertionError(f'the recorded log has no event {ev} '
                                 f'#{nth}: {sorted({e for e, _ in events})}')
        return found[nth]

    @staticmethod
    def binaries(name):
        """The build under test, and the ASan+UBSan build if there is one."""
        if os.path.exists(QEMU_ASAN):
            return [None, QEMU_ASAN]
        print(f'\n{name}: no ASan+UBSan build at {QEMU_ASAN}: '
              'sanitizer part skipped')
        return [None]

    def assert_clean(self, tag, rc, out):
        """No death by a signal and no sanitizer report."""
        self.assertGreaterEqual(rc, 0, f'{tag}: killed by signal '
                                f'{-rc}:\n{out[-3000:]}')
        self.assertNotIn(rc, SIGNAL_EXITS, f'{tag}:\n{out[-3000:]}')
        self.assertNotIn('ERROR: AddressSanitizer', out)
        self.assertNotIn('runtime error:', out)


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

    # -- the cases ------------------------------------------------------

    def test_random_array_too_long(self):
        """An RDRAND result of 4096 bytes, into 8: a stack overflow."""
        def patch(data, events):
            struct.pack_into('>I', data,
                             self.first(events, EV_RANDOM) + 4, 4096)
        self.check('random4096', patch,
                   r'replay: log event RANDOM at icount \d+: array of 4096 '
                   r'bytes exceeds the \d+ bytes expected')

    def test_random_array_4gib(self):
        def patch(data, events):
            struct.pack_into('>I', data,
                             self.first(events, EV_RANDOM) + 4, 0xffffffff)
        self.check('random4g', patch,
                   r'replay: log event RANDOM at icount \d+: array of '
                   r'4294967295 bytes exceeds the \d+ bytes expected')

    def test_char_read_4gib(self):
        """A serial input of 4 GiB: g_malloc(4 GiB) before."""
        def patch(data, events):
            struct.pack_into('>I', data, self.first(
                events, EV_ASYNC + ASYNC_CHAR_READ) + 1, 0xffffffff)
        self.check('charread4g', patch,
                   r'replay: log event ASYNC_EVENT_CHAR_READ at icount \d+: '
                   r'array of 4294967295 bytes exceeds the limit of \d+ '
                   r'bytes')

    def test_char_read_bad_device(self):
        """Serial input for a character device that does not exist."""
        def patch(data, events):
            data[self.first(events, EV_ASYNC + ASYNC_CHAR_READ)] = 200
        self.check('charreadid', patch,
                   r'replay: log event ASYNC_EVENT_CHAR_READ at icount \d+: '
                   r'character device 200 of \d+')

    def test_char_write_bad_offset(self):
        """A console write that claims more bytes than were written."""
        def patch(data, events):
            struct.pack_into('>I', data,
                             self.first(events, EV_CHAR_WRITE) + 4,
                             0x7fffffff)
        self.check('charwrite', patch,
                   r'replay: log event CHAR_WRITE at icount \d+: '
                   r'offset 2147483647 of a write of \d+ bytes')

    def test_instruction_count_negative(self):
        """An instruction count that does not fit the int it goes to."""
        def patch(data, events):
            struct.pack_into('>I', data,
                             self.first(events, EV_INSTRUCTION, 10),
                             0xfffffff0)
        self.check('insncount', patch,
                   r'replay: log event INSTRUCTION at icount \d+: '
                   r'instruction count 4294967280 out of range')


if __name__ == '__main__':
    import unittest
    unittest.main()

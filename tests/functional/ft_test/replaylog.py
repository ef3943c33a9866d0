# A short replay log of the test guest, its event layout, and a base
# class for the tests that corrupt it (test_hostile_log, a file replay;
# test_hostile_peer, a fake primary streaming it to a real backup).
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import shutil
import struct

from .config import BUILD
from .case import FTTestCase
from .wire import REPLAY_VERSION

QEMU_ASAN = os.environ.get('FT_QEMU_ASAN', os.path.join(
    BUILD, 'qemu-asan', 'qemu-system-x86_64'))

# Event ids of REPLAY_VERSION 0xe0200f (replay/replay-internal.h)
EV_INSTRUCTION = 0
EV_INTERRUPT = 1
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
EV_VCPU = 40
EV_VM_STOP = 41        # + the run state (a byte)
EV_VM_START = 42
EV_END = 43
HEADER_SIZE = 12

SIGNAL_EXITS = (134, 139)   # a shell's view of SIGABRT and SIGSEGV


def parse_log(data, block_ids=False):
    """[(event id, offset of the event's first payload byte)] of a log
    without input devices or audio, whose events have fixed layouts; and
    without disks, unless @block_ids: a plain blkreplay log, whose BLOCK
    events hold only the request's id (blkreplay ft=on adds its outcome,
    whose layout depends on the request)."""
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
                    EV_AUDIO_OUT) or EV_CLOCK <= ev <= EV_CLOCK_LAST or \
                (block_ids and ev == EV_ASYNC + ASYNC_BLOCK):
            p += 8
        elif ev == EV_ASYNC + ASYNC_CHAR_READ:
            p = array(p + 1)
        elif ev == EV_ASYNC + ASYNC_NET:
            p = array(p + 5)
        elif ev == EV_CHAR_WRITE:
            p += 8
        elif ev == EV_CHAR_READ_ALL:
            p = array(p)
        elif ev in (EV_CHAR_READ_ALL_ERROR, EV_VCPU):
            p += 4
        elif ev == EV_VM_STOP:
            p += 1
        elif ev == EV_RANDOM:
            p = array(p + 4)
        elif ev == EV_DIGEST:
            p = array(p + 8)
        elif ev == EV_END:
            break
        elif ev in (1, 2, EV_ASYNC + ASYNC_INPUT_SYNC, EV_VM_START) or \
                EV_SHUTDOWN <= ev <= EV_SHUTDOWN_LAST or \
                EV_CHECKPOINT <= ev <= EV_CHECKPOINT_LAST:
            pass
        else:
            raise AssertionError(f'event {ev} at {pos}: not parsed here')
        pos = p
    return events


def first(events, ev, nth=0):
    """Offset of the first payload byte of the @nth event @ev."""
    found = [p for e, p in events if e == ev]
    if len(found) <= nth:
        raise AssertionError(f'the recorded log has no event {ev} '
                             f'#{nth}: {sorted({e for e, _ in events})}')
    return found[nth]


def set_dword(ev, at, value, nth=0):
    """A patch for the log: the big-endian dword @at bytes into the
    @nth event @ev becomes @value."""
    def patch(data, events):
        struct.pack_into('>I', data, first(events, ev, nth) + at, value)
    return patch


def set_byte(ev, at, value, nth=0):
    def patch(data, events):
        data[first(events, ev, nth) + at] = value
    return patch


# Corrupt values, and what the player must say about each: the same
# whether the log is a file or streamed by a (hostile) primary.
CORRUPTIONS = {
    # an RDRAND result of 4096 bytes, into 8: a stack overflow before
    'random4096': (set_dword(EV_RANDOM, 4, 4096),
                   r'replay: log event RANDOM at icount \d+: array of 4096 '
                   r'bytes exceeds the \d+ bytes expected'),
    'random4g': (set_dword(EV_RANDOM, 4, 0xffffffff),
                 r'replay: log event RANDOM at icount \d+: array of '
                 r'4294967295 bytes exceeds the \d+ bytes expected'),
    # a serial input of 4 GiB: g_malloc(4 GiB) before
    'charread4g': (set_dword(EV_ASYNC + ASYNC_CHAR_READ, 1, 0xffffffff),
                   r'replay: log event ASYNC_EVENT_CHAR_READ at icount \d+: '
                   r'array of 4294967295 bytes exceeds the limit of \d+ '
                   r'bytes'),
    # serial input for a character device that does not exist
    'charreadid': (set_byte(EV_ASYNC + ASYNC_CHAR_READ, 0, 200),
                   r'replay: log event ASYNC_EVENT_CHAR_READ at icount \d+: '
                   r'character device 200 of \d+'),
    # a console write that claims more bytes than were written
    'charwrite': (set_dword(EV_CHAR_WRITE, 4, 0x7fffffff),
                  r'replay: log event CHAR_WRITE at icount \d+: '
                  r'offset 2147483647 of a write of \d+ bytes'),
    # an instruction count that does not fit the int it goes to
    'insncount': (set_dword(EV_INSTRUCTION, 0, 0xfffffff0, 10),
                  r'replay: log event INSTRUCTION at icount \d+: '
                  r'instruction count 4294967280 out of range'),
}


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
        # -rtc clock=vm, as a fault-tolerant VM has by default (patch
        # "rtc: keep a fault-tolerant VM's RTC on the virtual clock"): the
        # log is recorded to a file, whose default is the host clock, and
        # test_hostile_peer.py streams it to a backup.
        return ['-cpu', 'max', '-net', 'none', '-rtc', 'clock=vm',
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

    first = staticmethod(first)

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

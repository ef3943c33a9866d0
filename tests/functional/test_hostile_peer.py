#!/usr/bin/env python3
#
# A hostile primary: a fake peer that speaks the wire protocol
# (docs/wire-format.md) to a real backup QEMU and feeds it crafted logs
# and frames (issue 14).  Each case must end with a clear error and
# either a clean exit or a backup that stopped as diverged and then quits
# with status 0: never a crash, a hang or a sanitizer report.  The cases
# run against the ASan+UBSan build too, when it exists.
#
# The log is recorded from the test guest with rr=record,rrfile= (the
# same machine as the backup's), and sent as a primary would: HELLO, the
# header, CONFIG, then DATA frames that each end on an event boundary,
# with heartbeats.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import glob
import os
import socket
import struct
import threading
import time
import unittest

from ft_test import free_tcp_port, wait_port
from ft_test.wire import (FRAME_CONFIG, FRAME_DATA, FRAME_HEARTBEAT,
                          FRAME_HELLO, frame, hello)
from ft_test.replaylog import CORRUPTIONS, EV_CHECKPOINT, EV_INSTRUCTION, \
    EV_INTERRUPT, HEADER_SIZE, LogCase, parse_log, set_byte

FLAG_MORE = 0x0001
PRIMARY = 1
# What a backup says when its replay stands still with log waiting
STALLED = (r'DIVERGED from the primary at icount \d+: replay stalled for '
           r'5000 ms at icount \d+ with \d+ bytes of log waiting')
# ... and what it waited for: here an interrupt its CPU does not have
WAITED = (r"the stalled replay waited with the log's next event "
          r"EVENT_INTERRUPT at icount \d+, \d+ instructions to run; "
          r"queued by the devices: ")


class FakePrimary:
    """A primary that says what it is told to, and heartbeats meanwhile."""

    def __init__(self, port):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=30)
        self.off = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.received = b''
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        """Read what the backup sends (its HELLO, ACKs, heartbeats)."""
        while not self.stop.is_set():
            try:
                b = self.sock.recv(65536)
            except OSError:
                return
            if not b:
                return
            self.received += b

    def send(self, data):
        with self.lock:
            self.sock.sendall(data)

    def hello(self):
        self.send(frame(FRAME_HELLO, payload=hello(PRIMARY)))

    def data(self, chunk, more=False):
        with self.lock:
            self.sock.sendall(frame(FRAME_DATA, offset=self.off, payload=chunk,
                                    flags=FLAG_MORE if more else 0))
            self.off += len(chunk)

    def config(self, text=b''):
        self.send(frame(FRAME_CONFIG, offset=self.off, payload=text))

    def heartbeat_forever(self, every=0.02):
        def run():
            while not self.stop.is_set():
                try:
                    with self.lock:     # at the offset of the data sent
                        self.sock.sendall(frame(
                            FRAME_HEARTBEAT, offset=self.off,
                            payload=struct.pack('<QQ', 0, 0)))
                except OSError:
                    return
                time.sleep(every)
        threading.Thread(target=run, daemon=True).start()

    def close(self):
        self.stop.set()
        try:
            self.sock.close()
        except OSError:
            pass


class HostilePeer(LogCase):

    def start_backup(self, name, qemu=None, rrx=''):
        """A backup, waiting for its primary; launched in a thread, since
        QEMU's monitor comes up only once a primary attached.  @rrx: more
        -icount options."""
        port = free_tcp_port()
        # ft-hold=off: the console shows what the backup replays
        vm, con = self.make_vm(
            name, self.record_append(), rr='replay', qemu=qemu, hold=False,
            icount_extra=',rrchardev=ftlog' + rrx,
            args=[*self.record_args(), '-chardev',
                  f'socket,id=ftlog,host=127.0.0.1,port={port},'
                  'server=on,wait=on'])
        err = []

        def run():
            try:
                vm.launch()
            except Exception as e:  # noqa: BLE001  checked by the caller
                err.append(e)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        wait_port(port, 120)
        return vm, con, port, t, err

    def peer(self, port):
        p = FakePrimary(port)
        self.addCleanup(p.close)
        return p

    _bounds = {}

    @classmethod
    def boundaries(cls, log):
        """Where the events of @log start (and its end).  Parsing takes a
        while in Python: do it before the peer must keep time."""
        key = hash(log)
        if key not in cls._bounds:
            cls._bounds[key] = [p - 1 for _, p in parse_log(log)[1:]] + \
                [len(log)]
        return cls._bounds[key]

    def send_log(self, p, log, upto=None, bounds=None):
        """The header and the events, in frames that end on event
        boundaries (@bounds: those of the log before it was patched), of
        at most 256 KiB, up to byte @upto."""
        upto = len(log) if upto is None else upto
        bounds = bounds or self.boundaries(log)
        p.data(log[:HEADER_SIZE])
        p.config()
        start = HEADER_SIZE
        for b in bounds:
            if b > upto:
                break
            if b - start >= 128 * 1024 or b == upto:
                p.data(log[start:b])
                start = b
        while start < upto:
            end = min(upto, start + 256 * 1024)
            p.data(log[start:end], more=end < upto)
            start = end

    def send_quietly(self, p, log, bounds):
        """send_log() until the backup hangs up."""
        try:
            self.send_log(p, log, bounds=bounds)
        except OSError:
            pass

    def wait_exit(self, vm, t, timeout):
        t.join(timeout)
        vm.wait(timeout=timeout)
        return vm.exitcode(), vm.get_log() or ''

    def diverges(self, name, patch, expect, rrx='', check=None):
        """Feed a crafted log: the backup stops as diverged, saying
        @expect, and then quits cleanly.  @check(vm, log): more checks
        on the diverged backup."""
        log = bytearray(open(self.record(), 'rb').read())
        bounds = self.boundaries(bytes(log))
        patch(log, parse_log(bytes(log)))
        for qemu in self.binaries(name):
            tag = name + ('-asan' if qemu else '')
            vm, _, port, t, err = self.start_backup(tag, qemu, rrx)
            p = self.peer(port)
            p.hello()
            p.heartbeat_forever()
            # In a thread: a backup whose buffer is full reads no more
            threading.Thread(target=self.send_quietly,
                             args=(p, bytes(log), bounds),
                             daemon=True).start()
            t.join(120)
            self.assertFalse(err, f'{tag}: {err}')
            self.wait_log(vm, expect, 300 if qemu else 120)
            deadline = time.monotonic() + 60
            while vm.cmd('x-query-ft')['state'] != 'diverged':
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.2)
            if check:
                check(vm, log)
            vm.shutdown()
            rc, out = vm.exitcode(), vm.get_log() or ''
            self.assert_clean(tag, rc, out)
            self.assertEqual(rc, 0, f'{tag}: quit after divergence:\n'
                             f'{out[-3000:]}')
            p.close()

    def exits(self, name, feed, expect, timeout=60):
        """Feed the backup with @feed(peer, log) at startup: it must exit
        with status 1 within @timeout seconds, saying @expect."""
        log = open(self.record(), 'rb').read()
        self.boundaries(log)
        for qemu in self.binaries(name):
            tag = name + ('-asan' if qemu else '')
            vm, _, port, t, _ = self.start_backup(tag, qemu)
            p = self.peer(port)
            t0 = time.monotonic()
            feed(p, log)
            rc, out = self.wait_exit(vm, t, timeout * (3 if qemu else 1))
            self.log.info('%s: exit %s after %.1fs', tag, rc,
                          time.monotonic() - t0)
            self.assert_clean(tag, rc, out)
            self.assertEqual(rc, 1, f'{tag}:\n{out[-3000:]}')
            self.assertRegex(out, expect)
            p.close()
            if vm in self.vms:
                self.vms.remove(vm)

    # -- the log's contents ---------------------------------------------

    def test_control_whole_log(self):
        """The unmodified log, sent the same way, replays to its end."""
        log = open(self.record(), 'rb').read()
        vm, con, port, t, err = self.start_backup('control')
        p = self.peer(port)
        p.hello()
        p.heartbeat_forever()
        self.send_log(p, log)
        t.join(120)
        self.assertFalse(err)
        con.wait('FT-DONE', 120, vm)

    def test_random_array_too_long(self):
        self.diverges('random4096', *CORRUPTIONS['random4096'])

    def test_array_4gib(self):
        self.diverges('random4g', *CORRUPTIONS['random4g'])

    def test_char_write_bad_offset(self):
        self.diverges('charwrite', *CORRUPTIONS['charwrite'])

    def test_replay_stall(self):
        """A checkpoint turned into an interrupt that the backup's CPU
        does not have: its replay stands still with log waiting.  Before,
        it waited for ever (and a primary would stall at rrlag); now it
        is a divergence after FT_STALL_MS, which says what replay
        waited for."""
        self.diverges('stall', set_byte(EV_CHECKPOINT + 1, -1, EV_INTERRUPT,
                                        200), STALLED,
                      check=lambda vm, log: self.wait_log(vm, WAITED, 30))

    def test_replay_stall_full_buffer(self):
        """The same stall early in the log, with the receive buffer at its
        least (rrbufbytes=2M): the buffer is full when replay stops, and
        the backup waits for room, reading nothing more.  Before, the
        stall was looked for only between frames: the backup heartbeated
        for ever, and a real primary would have stalled at rrlagbytes."""
        def patch(log, events):
            at = next(p for e, p in events
                      if e == EV_CHECKPOINT + 1 and p > 100000)
            log[at - 1] = EV_INTERRUPT

        def full(vm, log):
            ft = vm.cmd('x-query-ft')
            self.assertLess(ft['log-received'], len(log) - 65536,
                            f'the buffer was not full: {ft}')
        self.diverges('stallfull', patch, STALLED, rrx=',rrbufbytes=2M',
                      check=full)

    # -- the framing ------------------------------------------------------

    def test_cut_event(self):
        """A frame that ends inside an event, without MORE, and then only
        heartbeats: before, the backup waited for the rest for ever with
        the replay mutex held."""
        log = open(self.record(), 'rb').read()
        cut = self.first(parse_log(log), EV_INSTRUCTION, 20) + 2
        for qemu in self.binaries('cut'):
            tag = 'cut' + ('-asan' if qemu else '')
            vm, _, port, t, err = self.start_backup(tag, qemu)
            p = self.peer(port)
            p.hello()
            p.heartbeat_forever()
            self.send_log(p, log, upto=cut)
            t.join(120)
            self.assertFalse(err)
            self.wait_log(vm, r'protocol error: the primary ended a frame '
                          r'inside an event', 120)
            self.wait_log(vm, r'the log cannot be read inside the event', 30)
            deadline = time.monotonic() + 60
            while vm.cmd('x-query-ft')['state'] != 'diverged':
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.2)
            vm.shutdown()
            self.assert_clean(tag, vm.exitcode(), vm.get_log() or '')
            self.assertEqual(vm.exitcode(), 0)

    # -- the handshake and startup ---------------------------------------

    def test_slow_hello(self):
        """A peer that sends its HELLO a byte every 2 s must not hold up
        the next one: the real primary is answered at once."""
        vm, con, port, t, err = self.start_backup('slow')
        slow = socket.create_connection(('127.0.0.1', port))
        self.addCleanup(slow.close)
        msg = frame(FRAME_HELLO, payload=hello(PRIMARY))
        stop = threading.Event()
        self.addCleanup(stop.set)

        def dribble():
            for b in msg[:-1]:
                if stop.is_set():
                    return
                try:
                    slow.sendall(bytes([b]))
                except OSError:
                    return
                time.sleep(2)
        threading.Thread(target=dribble, daemon=True).start()
        time.sleep(1)
        t0 = time.monotonic()
        p = self.peer(port)
        while len(p.received) < 40:     # the backup's HELLO frame
            self.assertLess(time.monotonic() - t0, 5,
                            'the backup did not answer the real primary '
                            'while another peer was in its handshake')
            time.sleep(0.05)
        answered = time.monotonic() - t0
        p.hello()
        p.heartbeat_forever()
        self.send_log(p, open(self.record(), 'rb').read())
        t.join(120)
        self.assertFalse(err)
        con.wait('FT-DONE', 120, vm)
        self.log.info('the real primary was answered after %.2fs', answered)

    def first_events(self, p, log):
        """The log's first events, up to a boundary past 4 KiB."""
        end = next(b for b in self.boundaries(log) if b >= 4096)
        p.data(log[HEADER_SIZE:end])

    def test_heartbeats_without_config(self):
        """HELLO, the log's start, then heartbeats for ever and no CONFIG
        (which the backup waits for with the BQL held)."""
        def feed(p, log):
            p.hello()
            p.heartbeat_forever()
            p.data(log[:HEADER_SIZE])
            self.first_events(p, log)
        self.exits('noconfig', feed,
                   r'the primary sent no CONFIG \(the description of its '
                   r'disks\) within \d+ ms; refusing to replay')

    def test_heartbeats_without_events(self):
        """HELLO, the log's header, then heartbeats for ever."""
        def feed(p, log):
            p.hello()
            p.heartbeat_forever()
            p.data(log[:HEADER_SIZE])
        self.exits('noevent', feed,
                   r'the primary sent no event within \d+ ms of its log\'s '
                   r'header; refusing to replay')

    def test_heartbeats_without_log(self):
        """HELLO, then heartbeats for ever and no log at all."""
        def feed(p, log):
            p.hello()
            p.heartbeat_forever()
        self.exits('nolog', feed,
                   r'the primary sent no log within \d+ ms of its HELLO')

    def test_config_escape_sequences(self):
        """Drive names from the peer reach stderr escaped, never as
        terminal control sequences."""
        def feed(p, log):
            p.hello()
            p.heartbeat_forever()
            p.data(log[:HEADER_SIZE])
            p.config(b'drive ev\x1b]0;pwned\x07il\x1b[2J ft=on '
                     b'chain=raw/file size=1\n')
            self.first_events(p, log)
        self.exits('escapes', feed, r"drive 'ev\\x1b\]0;pwned\\x07il"
                   r"\\x1b\[2J' of the primary is missing here")
        for vm_log in self.workdir_logs():
            self.assertNotIn('\x1b', vm_log)

    def workdir_logs(self):
        for path in glob.glob(os.path.join(self.workdir, '*.log')):
            with open(path, encoding='utf-8', errors='replace') as f:
                yield f.read()


if __name__ == '__main__':
    unittest.main()

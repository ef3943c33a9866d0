#!/usr/bin/env python3
#
# The shared disk: one raw image that the primary and its backup both
# open, under blkreplay's fault-tolerant mode (ft=on): reads and return
# codes go through the log, writes wait for the backup's acknowledgement,
# the replaying backup does no I/O at all, and reissues at go-live what
# was in flight.
#
# Copyright (c) 2026 The qemu-ft authors
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import random
import re
import signal
import subprocess
import time
import unittest

from ftfail import FailoverCase, splice_consoles, ticks

KILLS = int(os.environ.get('FT_DISK_KILLS', '2'))
DISK_MB = 4


def shared_drive(path, backup, extra=''):
    """The guest's AHCI disk on the shared image, through blkreplay ft=on.

    The backup opens the image without taking QEMU's image lock (the
    primary holds it); both use O_DIRECT, as host page caches on two hosts
    would not be coherent.
    """
    lock = ',file.locking=off' if backup else ''
    return ['-drive', f'file={path},if=none,id=d0,format=raw,'
            f'cache.direct=on{lock}{extra}',
            '-drive', 'driver=blkreplay,if=none,image=d0,id=d0-rr,ft=on',
            '-device', 'ide-hd,drive=d0-rr']


class SharedDiskTest(FailoverCase):

    def start(self, primary_extra='', rrx=''):
        self.disk = self.make_disk('shared.img', 16)
        p, pcon, b, bcon = self.make_ft_pair(
            self.guest_args(work='disk,ticker', disk_loops=0,
                            disk_mb=DISK_MB),
            rrx=rrx,
            primary_args=shared_drive(self.disk, False, primary_extra),
            backup_args=shared_drive(self.disk, True))
        return p, pcon, b, bcon

    @staticmethod
    def verified(text):
        fails = re.findall(r'^DISK (?:verify|write) FAIL.*$', text, re.M)
        if fails:
            raise AssertionError(f'the guest saw bad disk data: {fails}')
        return len(re.findall(r'^DISK verify ok', text, re.M))

    def test_kill_primary(self):
        """kill -9 of the primary mid-write: the backup takes over the
        shared disk and the guest's verification keeps passing."""
        rnd = random.Random(os.environ.get('FT_SEED'))
        for i in range(KILLS):
            with self.subTest(trial=i):
                p, pcon, b, bcon = self.start()
                pcon.wait(r'DISK write ok loop=1\b', 180, p)
                time.sleep(rnd.uniform(0, 3))
                os.kill(p.get_pid(), signal.SIGKILL)
                self.wait_event(b, 'FT_WENT_LIVE', 60)
                before = self.verified(pcon.text() + bcon.text())
                # Two more full write+verify rounds from the new primary
                deadline = time.monotonic() + 240
                while self.verified(bcon.text()) < 2:
                    self.assertLess(time.monotonic(), deadline,
                                    'the guest stopped verifying its disk')
                    time.sleep(0.5)
                stream, _ = splice_consoles(pcon.text(), bcon.text())
                self.verified(stream)
                ticks(stream)
                self.log.info('verified rounds: %d before, %d after', before,
                              self.verified(bcon.text()))
                info = b.cmd('x-query-ft')
                self.assertEqual(info['state'], 'live')
                self.assertEqual(info['digest']['mismatches'], 0)
            self.next_trial(i, KILLS)

    def image_syscalls(self, pid, seconds):
        """pread/pwrite-family system calls of @pid (all threads) on the
        shared image, traced for @seconds."""
        out = self.scratch(f'strace.{pid}')
        tr = subprocess.Popen(['strace', '-f', '-qq', '-y', '-p', str(pid),
                               '-e', 'trace=pread64,pwrite64,preadv,'
                               'pwritev,preadv2,pwritev2,io_submit,'
                               'io_uring_enter', '-o', out])
        time.sleep(seconds)
        tr.send_signal(signal.SIGINT)
        tr.wait(30)
        with open(out) as f:
            return [ln for ln in f if 'shared.img' in ln]

    def test_backup_does_no_disk_io(self):
        """While it replays, the backup process reads and writes nothing on
        the shared image: strace of all its threads, against the primary
        doing the same guest I/O."""
        p, pcon, b, bcon = self.start()
        pcon.wait(r'DISK write ok loop=1\b', 180, p)
        with open(f'/proc/{b.get_pid()}/io') as f:
            io0 = dict(ln.split(': ') for ln in f.read().splitlines())
        backup = self.image_syscalls(b.get_pid(), 4)
        primary = self.image_syscalls(p.get_pid(), 4)
        with open(f'/proc/{b.get_pid()}/io') as f:
            io1 = dict(ln.split(': ') for ln in f.read().splitlines())
        self.log.info('image I/O calls: primary %d, backup %d; backup '
                      'read_bytes +%d write_bytes +%d', len(primary),
                      len(backup), int(io1['read_bytes']) -
                      int(io0['read_bytes']), int(io1['write_bytes']) -
                      int(io0['write_bytes']))
        self.assertGreater(len(primary), 10, 'the primary did no disk I/O')
        self.assertEqual(backup, [])
        self.assertEqual(io1['write_bytes'], io0['write_bytes'])
        self.assertEqual(b.cmd('x-query-ft')['state'], 'streaming')
        self.verified(pcon.text())

    def test_disk_errors_reach_the_backup(self):
        """I/O errors injected on the primary (blkdebug) are in the log:
        the backup sees the same errors and stays in lockstep."""
        conf = self.scratch('blkdebug.conf')
        with open(conf, 'w') as f:
            f.write('[inject-error]\nevent = "read_aio"\niotype = "read"\n'
                    'errno = "5"\nonce = "off"\nsector = "4096"\n')
        self.disk = self.make_disk('shared.img', 16)
        append = self.guest_args(work='disk,ticker', disk_loops=0,
                                 disk_mb=DISK_MB)
        pdrive = ['-drive', f'driver=raw,if=none,id=d0,file.driver=blkdebug,'
                  f'file.config={conf},file.image.filename={self.disk}',
                  '-drive', 'driver=blkreplay,if=none,image=d0,id=d0-rr,'
                  'ft=on', '-device', 'ide-hd,drive=d0-rr']
        p, pcon, b, bcon = self.make_ft_pair(
            append, primary_args=pdrive,
            backup_args=shared_drive(self.disk, True))
        pcon.wait(r'DISK verify FAIL|I/O error', 240, p)
        time.sleep(3)
        pi, bi = p.cmd('x-query-ft'), b.cmd('x-query-ft')
        self.assertEqual(pi['state'], 'streaming')
        self.assertEqual(bi['state'], 'streaming')
        self.assertEqual(bi['digest']['mismatches'], 0)
        self.assertGreater(bi['digest']['checks'], 5)


if __name__ == '__main__':
    unittest.main()

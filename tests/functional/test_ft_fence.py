#!/usr/bin/env python3
#
# Fencing of a stale primary's writes (docs/fencing.md).  The primary
# reaches the shared image through its host's storage path, here a FUSE
# file system that can hold writes back (ft_test/holdfs.py); the backup
# reaches the same file directly, as another host would.  The hazard:
# a write of the primary is held in its host's storage stack; the
# primary is killed (kill -9 does not recall that write); the backup
# goes live and writes newer data to the same blocks; the held write is
# released and lands over them.  With rrfence=on the survivor holds its
# writes until x-ft-release-writes, which a cluster gives once the old
# primary's process has exited or its host was fenced: then the stale
# write, released first, is overwritten by the redone and newer ones.
#
# Copyright (c) 2026 The qemu-ft authors
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import re
import signal
import subprocess
import time
import unittest

from ft_test import WORKLOADS, FailoverCase, shared_drive
from ft_test.holdctl import held_image

DISK_MB = 2
BLOCK = 4096
# A FUSE daemon in Python serves the primary's disk: a starved pair must
# not fail over by itself.
RRX = ',rrtimeout=1000'


def guest_pattern(loop, size, tmp):
    """The bytes the guest's disk workload writes in loop @loop (its
    pattern(): od's dump of "ftdisk loop=N" lines)."""
    need = (size // 41 + 2) * 16
    unit = f'ftdisk loop={loop}\n'.encode()
    data = unit
    while len(data) < need:
        data += data
    with open(tmp, 'wb') as f:
        f.write(data)
    out = subprocess.run(['od', '-v', '-A', 'd', '-t', 'x8', '-N', str(need),
                          tmp], check=True, capture_output=True).stdout
    return out[:size].ljust(size, b'\0')


class FenceTest(FailoverCase):

    timeout = 600

    def trial(self, fence):
        """One kill -9 with a write held in the primary's storage path;
        returns (blocks of the image holding the stale loop's data,
        loop numbers, x-query-ft of the survivor)."""
        fs, held, img = held_image(self)
        p, pcon, b, bcon = self.make_ft_pair(
            WORKLOADS['disk'].append(disk_mb=DISK_MB),
            rrx=RRX + (',rrfence=on' if fence else ''),
            primary_args=shared_drive(held, False),
            backup_args=shared_drive(img, True))
        pcon.wait(r'DISK write ok loop=2\b', 240, p)
        # Hold the primary's writes from now on: the next loop's
        fs.ctl('hold')
        fs.wait(60, held=1)
        time.sleep(0.2)
        pid = p.get_pid()
        os.kill(pid, signal.SIGKILL)
        self.wait_event(b, 'FT_WENT_LIVE', 60)
        done = [int(k) for k in
                re.findall(r'^DISK write ok loop=(\d+)', pcon.text(), re.M)]
        stale = max(done) + 1           # the loop whose writes are held
        newer = stale + 1
        self.log.info('fence=%s: loop %d held in the primary\'s storage '
                      'path (%s)', fence, stale, fs.state())
        if fence:
            # The survivor's writes wait: the guest makes no progress
            # on its disk, and the held write is still to land.
            time.sleep(3)
            info = b.cmd('x-query-ft')
            self.assertTrue(info['writes-fenced'])
            self.assertGreater(info['fenced-writes'], 0)
            self.assertNotRegex(bcon.text(),
                                rf'DISK write ok loop={stale}\b')
            # The cluster's part: the old primary's process has exited
            # (here its held write completes; fencing its host would
            # have failed it instead), and only then the release.
            fs.ctl('release')
            fs.wait(10, done=1)
            p._popen.wait(30)
            b.cmd('x-ft-release-writes')
            b.cmd('x-ft-release-writes')    # a second call does nothing
            bcon.wait(rf'DISK write ok loop={newer}\b', 240, b)
        else:
            bcon.wait(rf'DISK write ok loop={newer}\b', 240, b)
            # The old primary's write, held all along, lands now.
            held = fs.state()['held']
            fs.ctl('release')
            fs.wait(10, done=held)
        b.cmd('stop')
        info = b.cmd('x-query-ft')
        with open(img, 'rb') as f:
            disk = f.read(DISK_MB << 20)
        tmp = self.scratch('pattern')
        old = guest_pattern(stale, len(disk), tmp)
        new = guest_pattern(newer, len(disk), tmp)
        stale_blocks = [i for i in range(0, len(disk), BLOCK)
                        if disk[i:i + BLOCK] == old[i:i + BLOCK] and
                        old[i:i + BLOCK] != new[i:i + BLOCK]]
        return stale_blocks, (stale, newer), info

    def test_stale_write_lands_without_fencing(self):
        """The hazard, shown: without rrfence, the old primary's held
        write overwrites the survivor's newer data."""
        stale_blocks, loops, _ = self.trial(fence=False)
        self.log.info('without rrfence: %d blocks of loop %d over loop %d',
                      len(stale_blocks), *loops)
        self.assertGreater(len(stale_blocks), 0,
                           'the held write did not land over newer data')

    def test_fenced_survivor_keeps_newer_data(self):
        """With rrfence=on the survivor's writes wait for the release,
        and nothing stale is left on the disk."""
        stale_blocks, loops, info = self.trial(fence=True)
        self.log.info('rrfence=on: %d stale blocks; fence-ms %.1f',
                      len(stale_blocks), info['fence-ms'])
        self.assertEqual(stale_blocks, [])
        self.assertFalse(info['writes-fenced'])

    def test_stop_fails_held_writes(self):
        """A survivor stopped while its writes wait fails them (EIO to
        the guest) instead of hanging its drain; held again once it runs,
        they do not keep a quit from exiting; release is refused on a VM
        that is not a fenced survivor, and so is x-ft-protect on one."""
        src = self.scratch('storage')
        os.makedirs(src, exist_ok=True)
        img = os.path.join(src, 'shared.img')
        with open(img, 'wb') as f:
            f.truncate(16 << 20)
        p, pcon, b, bcon = self.make_ft_pair(
            WORKLOADS['disk'].append(disk_mb=DISK_MB),
            rrx=RRX + ',rrfence=on',
            primary_args=shared_drive(img, False),
            backup_args=shared_drive(img, True))
        pcon.wait(r'DISK write ok loop=1\b', 240, p)
        r = p.qmp('x-ft-release-writes')
        self.assertIn('not a backup that went live', str(r.get('error')))
        os.kill(p.get_pid(), signal.SIGKILL)
        self.wait_event(b, 'FT_WENT_LIVE', 60)
        deadline = time.monotonic() + 60
        while not b.cmd('x-query-ft')['fenced-writes']:
            self.assertLess(time.monotonic(), deadline, 'no write held')
            time.sleep(0.2)
        r = b.qmp('x-ft-protect', uri='tcp:127.0.0.1:1',
                  address={'type': 'inet', 'host': '127.0.0.1', 'port': '1'})
        self.assertIn('x-ft-release-writes', str(r.get('error')))
        b.cmd('stop')       # returns: the held writes failed
        self.wait_log(b, r'disk writes waited for x-ft-release-writes: '
                      r'they fail', 10)
        info = b.cmd('x-query-ft')
        self.assertEqual(info['fenced-writes'], 0)
        self.assertTrue(info['writes-fenced'])
        # Running again, the guest's next writes are held again
        b.cmd('cont')
        deadline = time.monotonic() + 60
        while not b.cmd('x-query-ft')['fenced-writes']:
            self.assertLess(time.monotonic(), deadline, 'no write held')
            time.sleep(0.2)
        # ... and a quit does not wait for them (its drain and flush)
        b.qmp('quit')
        self.assertIsNotNone(b._popen.wait(30))


if __name__ == '__main__':
    unittest.main()

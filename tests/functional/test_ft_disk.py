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

from ft_test import QEMU_IMG, WORKLOADS, BridgedCase, FailoverCase, \
    guest_args, shared_drive, splice_consoles, ticks, wait_runstate
from ft_test.ext4 import check_image, fs_checked, mkfs_ext4
from ft_test.holdctl import held_image

KILLS = int(os.environ.get('FT_DISK_KILLS', '2'))
# ... at -smp 2 (test_ft_smp.py has the other -smp tests)
SMP_KILLS = int(os.environ.get('FT_SMP_KILLS', '1'))
FS_LOOPS = 9


class SharedDiskTest(FailoverCase):

    def start(self, primary_extra='', rrx=''):
        self.disk = self.make_disk('shared.img', 16)
        p, pcon, b, bcon = self.make_ft_pair(
            WORKLOADS['disk'].append(), rrx=rrx,
            primary_args=shared_drive(self.disk, False, primary_extra),
            backup_args=shared_drive(self.disk, True))
        return p, pcon, b, bcon

    @staticmethod
    def verified(text):
        fails = re.findall(r'^DISK (?:verify|write) FAIL.*$', text, re.M)
        if fails:
            raise AssertionError(f'the guest saw bad disk data: {fails}')
        return len(re.findall(r'^DISK verify ok', text, re.M))

    fs_checked = staticmethod(fs_checked)

    def ext4_kill_trials(self, fmt, kills, bus='ahci', smp=1):
        """ext4 on the shared disk (image format @fmt, on @bus), files written,
        fsynced and verified in a loop; kill -9 of the primary at a random
        moment, @kills times; at -smp @smp, every vCPU kept busy as well
        (test_ft_smp.py).  The guest's verification of every file it
        completed keeps passing on the new primary; after its clean
        shutdown, the image checks clean (qemu-img check, e2fsck) and the
        host reads the right data from each file."""
        rnd = random.Random(os.environ.get('FT_SEED'))
        kib = 256
        for i in range(kills):
            with self.subTest(trial=i):
                img = mkfs_ext4(self.scratch('shared.img'), 32, fmt)
                p, pcon, b, bcon = self.make_ft_pair(
                    self.guest_args(work='fs,ticker' +
                                    (',smp' if smp > 1 else ''),
                                    disk_loops=FS_LOOPS, smp_epochs=0,
                                    fs_kb=kib, poweroff=1),
                    primary_args=shared_drive(img, False, fmt=fmt, bus=bus),
                    backup_args=shared_drive(img, True, fmt=fmt, bus=bus),
                    smp=smp)
                # A random moment, in loops rather than seconds: how many
                # loops a second is the pair's speed, and at least three
                # must be left for the new primary.
                loop = rnd.randint(2, FS_LOOPS - 4)
                pcon.wait(rf'FS write ok loop={loop}\b', 180, p)
                time.sleep(rnd.uniform(0, 0.5))
                os.kill(p.get_pid(), signal.SIGKILL)
                self.wait_event(b, 'FT_WENT_LIVE', 60)
                killed_at = self.fs_checked(pcon.text())
                self.assertNotIn('FS done', pcon.text(), 'killed too late')
                # The new primary finishes the loops, unmounts, powers off
                self.assertEqual(self.wait_exit(b, 400), 0)
                stream, _ = splice_consoles(pcon.text(), bcon.text())
                rounds = self.fs_checked(stream)
                ticks(stream)
                self.assertIn('FS done loops=%d' % FS_LOOPS, stream)
                self.assertGreaterEqual(self.fs_checked(bcon.text()), 2)
                # QEMU's own log file: get_log() is only filled at shutdown
                with open(self.scratch('backup.log')) as f:
                    redone = re.search(r'redid (\d+) writes', f.read())
                self.log.info('%s trial %d: killed after %d verified rounds,'
                              ' %d in all; %s writes redone', fmt, i,
                              killed_at, rounds,
                              redone.group(1) if redone else 'no')
                files = re.findall(r'^FS file (\d+) sha256=([0-9a-f]+)',
                                   stream, re.M)
                self.assertEqual(len(files), min(FS_LOOPS, 8))
                check_image(img, fmt, files, FS_LOOPS, kib)
            self.next_trial(i, kills)

    def test_kill_primary_ext4(self):
        self.ext4_kill_trials('raw', KILLS)

    def test_kill_primary_ext4_virtio_blk(self):
        self.ext4_kill_trials('raw', KILLS, 'virtio-blk')

    def test_kill_primary_ext4_virtio_scsi(self):
        self.ext4_kill_trials('raw', KILLS, 'virtio-scsi')

    def test_kill_primary_ext4_smp2(self):
        self.ext4_kill_trials('raw', SMP_KILLS, smp=2)

    def test_kill_primary_ext4_qcow2(self):
        """The same on a qcow2 image: the new primary reloads the qcow2
        metadata the old one changed before it allocates clusters."""
        self.ext4_kill_trials('qcow2', KILLS)

    def test_kill_primary(self):
        """kill -9 of the primary mid-write to the raw disk: the backup
        takes over the shared disk and the guest's verification keeps
        passing."""
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

    def image_syscalls(self, pids, want, least=4, most=120):
        """pread/pwrite-family system calls on the shared image of each of
        @pids (all threads), traced at the same time: for @least seconds,
        and on until the first pid made @want of them (a slow build, such
        as the ASan one, needs longer), or @most seconds."""
        outs, tracers = [], []
        for pid in pids:
            outs.append(self.scratch(f'strace.{pid}'))
            tracers.append(subprocess.Popen(
                ['strace', '-f', '-qq', '-y', '-p', str(pid), '-e',
                 'trace=pread64,pwrite64,preadv,pwritev,preadv2,pwritev2,'
                 'io_submit,io_uring_enter', '-o', outs[-1]]))

        def calls(out):
            try:
                with open(out) as f:
                    return [ln for ln in f if 'shared.img' in ln]
            except FileNotFoundError:
                return []
        t0 = time.monotonic()
        while time.monotonic() - t0 < most and \
                (time.monotonic() - t0 < least or len(calls(outs[0])) < want):
            time.sleep(0.5)
        for tr in tracers:
            tr.send_signal(signal.SIGINT)
            tr.wait(30)
        return [calls(out) for out in outs]

    def test_backup_does_no_disk_io(self):
        """While it replays, the backup process reads and writes nothing on
        the shared image: strace of all its threads, against the primary
        doing the same guest I/O."""
        p, pcon, b, bcon = self.start()
        pcon.wait(r'DISK write ok loop=1\b', 180, p)
        with open(f'/proc/{b.get_pid()}/io') as f:
            io0 = dict(ln.split(': ') for ln in f.read().splitlines())
        primary, backup = self.image_syscalls([p.get_pid(), b.get_pid()],
                                              11)
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
        append = WORKLOADS['disk'].append()
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


    def io_error_pair(self, rrx=',rrtimeout=2000'):
        """A pair of the disk workload whose disk has
        werror=stop,rerror=stop, the primary's path to it through a
        HoldFs; returns (the HoldFs, p, pcon, b, bcon) once the guest
        verified its disk."""
        stop = ',werror=stop,rerror=stop'
        fs, held, img = held_image(self)
        p, pcon, b, bcon = self.make_ft_pair(
            WORKLOADS['disk'].append(), rrx=rrx,
            primary_args=shared_drive(held, False, dev_extra=stop),
            backup_args=shared_drive(img, True, dev_extra=stop))
        pcon.wait(r'DISK verify ok', 240, p)
        return fs, p, pcon, b, bcon

    def goes_on_live(self, pcon, b, bcon):
        """The backup @b goes live, and the guest goes on verifying its
        disk without seeing an error."""
        self.wait_event(b, 'FT_WENT_LIVE', 60)
        deadline = time.monotonic() + 180
        while self.verified(bcon.text()) < 2:
            self.assertLess(time.monotonic(), deadline,
                            'the guest stopped verifying its disk')
            time.sleep(0.5)
        self.assertEqual(b.cmd('query-status')['status'], 'running')
        stream, _ = splice_consoles(pcon.text(), bcon.text())
        self.verified(stream)
        self.assertNotIn('I/O error', stream)

    @staticmethod
    def cont_until_running(vm, tries=20):
        """cont until @vm keeps running: a recording VM takes the outcomes
        of its requests one at a time, and each failed one stops it
        again.  Returns how many cont it took."""
        for n in range(1, tries + 1):
            if vm.cmd('query-status')['status'] != 'running':
                vm.cmd('cont')
            time.sleep(1)
            if vm.cmd('query-status')['status'] == 'running':
                return n
        raise AssertionError(f'still stopped after {tries} cont')

    def test_io_error_backup_quits(self):
        """A backup that quits while its primary is stopped on a failed
        request, stopped there too with the request to retry, exits
        cleanly: it does not retry the request on its way out."""
        fs, p, pcon, b, bcon = self.io_error_pair()
        fs.ctl('fail')
        self.wait_event(p, 'BLOCK_IO_ERROR', 60)
        wait_runstate(p, ('io-error',), 30)
        self.wait_event(b, 'BLOCK_IO_ERROR', 60)
        # The backup stops where its primary stopped, in the same state
        self.assertEqual(wait_runstate(b, ('io-error',), 30), 'io-error')
        self.shutdown_checked(b)
        self.assertEqual(b.exitcode(), 0, b.get_log())

    def test_io_error_then_failover(self):
        """The primary stopped by its failed storage (werror=stop) dies
        there: the backup, whose own path to the disk works, goes live
        and retries the stopped requests itself; the guest goes on
        verifying its disk and never sees an error."""
        fs, p, pcon, b, bcon = self.io_error_pair()
        fs.ctl('fail')
        self.wait_event(p, 'BLOCK_IO_ERROR', 60)
        wait_runstate(p, ('io-error',), 30)
        time.sleep(1)
        os.kill(p.get_pid(), signal.SIGKILL)
        before = self.verified(pcon.text())
        self.goes_on_live(pcon, b, bcon)
        info = b.cmd('x-query-ft')
        self.assertEqual(info['state'], 'live', info)
        self.assertEqual(info['digest']['mismatches'], 0, info)
        self.log.info('verified rounds: %d before, %d after', before,
                      self.verified(bcon.text()))

    def test_backup_bounds_writes_kept_for_redo(self):
        """Every flush of the primary fails (blkdebug): no write is ever
        known durable, and the backup, which keeps writes for redo until a
        flush covers them, would grow with all of them.  With ft-redo-max
        at 1 MiB it drops the oldest, says so once, and stays in lockstep;
        with the default it keeps them all and says nothing."""
        warning = (r"blkreplay: 'd0-rr': the recorder's flushes failed and "
                   r"over 1024 KiB of writes wait for one")
        trials = ((',ft-redo-max=1M', True), ('', False))
        for i, (redo_max, dropped) in enumerate(trials):
            conf = self.scratch('blkdebug.conf')
            with open(conf, 'w') as f:
                f.write('[inject-error]\nevent = "flush_to_disk"\n'
                        'iotype = "flush"\nerrno = "5"\nonce = "off"\n')
            self.disk = self.make_disk('shared.img', 16)
            p, pcon, b, bcon = self.make_ft_pair(
                WORKLOADS['disk'].append(),
                primary_args=[
                    '-drive', 'driver=raw,if=none,id=d0,'
                    f'file.driver=blkdebug,file.config={conf},'
                    f'file.image.filename={self.disk}',
                    '-drive', 'driver=blkreplay,if=none,image=d0,'
                    'id=d0-rr,ft=on', '-device', 'ide-hd,drive=d0-rr'],
                backup_args=[
                    '-drive', f'file={self.disk},if=none,id=d0,format=raw,'
                    'cache.direct=on,file.locking=off',
                    '-drive', 'driver=blkreplay,if=none,image=d0,'
                    f'id=d0-rr,ft=on{redo_max}',
                    '-device', 'ide-hd,drive=d0-rr'])
            # each loop writes 4 MiB and flushes
            pcon.wait(r'DISK write (?:ok|FAIL) loop=2\b', 240, p)
            out = self.log_text(b)
            bi = b.cmd('x-query-ft')
            self.log.info('ft-redo-max %s: backup %s, %d digest checks; '
                          'warned: %s', redo_max.split('=')[-1] or 'default',
                          bi['state'], bi['digest']['checks'],
                          bool(re.search(warning, out)))
            self.assertEqual(bi['state'], 'streaming')
            self.assertEqual(bi['digest']['mismatches'], 0)
            if dropped:
                self.assertRegex(out, warning)
                self.assertEqual(len(re.findall('flushes failed', out)), 1)
            else:
                self.assertNotRegex(out, 'flushes failed')
            self.next_trial(i, len(trials))

    def mismatched_backup(self, backup_drive, why, fmt='raw'):
        """The backup opens the shared disk differently: it must refuse
        to replay, saying @why, and the primary run on without it."""
        self.disk = self.make_disk('shared.img', 16)
        if fmt != 'raw':
            subprocess.run([QEMU_IMG, 'create', '-q', '-f', fmt, self.disk,
                            '16M'], check=True)
        p, pcon, b, bcon = self.make_ft_pair(
            self.guest_args(work='ticker'), launch=False,
            primary_args=shared_drive(self.disk, False, fmt=fmt),
            backup_args=backup_drive)
        with self.assertRaises(Exception):
            self.pair.start()
        self.assertEqual(self.wait_exit(b, 30), 1)
        log = b.get_log() or ''
        self.log.info('backup: %s', log.strip().splitlines()[-1])
        self.assertIn('the disks differ from the primary', log)
        self.assertIn(why, log)
        self.vms.remove(b)
        # Nothing was replayed, so nothing reached the disk from it; the
        # primary loses its backup, wins the lock and runs on alone.  It
        # may do so before its QMP client has connected, so its state is
        # polled: FT_WENT_LIVE can come before anyone listens.
        deadline = time.monotonic() + 60
        while p.cmd('x-query-ft')['state'] != 'live':
            self.assertLess(time.monotonic(), deadline,
                            'the primary did not go live without its backup')
            time.sleep(0.1)
        pcon.wait(r'TICK 2\b', 120, p)

    def test_backup_on_another_file(self):
        """A backup pointed at a copy of the image is refused."""
        copy = self.scratch('copy.img')
        self.make_disk('copy.img', 16)
        self.mismatched_backup(shared_drive(copy, True),
                               "a different image file")

    def test_backup_with_another_size(self):
        """The same file, seen with another size, is refused."""
        self.mismatched_backup(shared_drive(self.scratch('shared.img'), True,
                                            extra=',size=8388608'),
                               "size 8388608 here, 16777216 on the primary")

    def test_backup_with_another_format(self):
        """A qcow2 image that the backup opens as raw is refused."""
        self.mismatched_backup(shared_drive(self.scratch('shared.img'), True),
                               "format raw/file here, qcow2/file on the "
                               "primary", fmt='qcow2')


if __name__ == '__main__':
    unittest.main()


class IoErrorNetTest(BridgedCase):

    def test_io_error_pauses_and_resumes(self):
        """werror=stop,rerror=stop, the setting of highly available VMs,
        with TCP echo streams through the guest's NIC too: the primary's
        storage path fails every read and write for 5 s, three times
        (ft_test/holdfs.py), and the primary stops at its first failed
        request, and again at each retry, with a cont every second
        meanwhile, as an eager management gives.  The backup stops where
        the primary stopped and starts where it started (the log says
        where), so that its devices act at each cont where the
        primary's did: virtio-net's transmit bottom half, IDE's retry.
        Once the storage is back, cont on the primary retries the request
        (once per failed request: see cont_until_running()), and the pair
        goes on in lockstep: the guest never sees an error, and no echoed
        byte is lost."""
        net = self.net
        stop = ',werror=stop,rerror=stop'
        fs, held, img = held_image(self)
        p, pcon, b, bcon = self.make_ft_pair(
            guest_args(ip=net.GUEST_IP + '/24', work='echo,ticker,disk',
                       disk_loops=0, disk_mb=4),
            rrx=',rrtimeout=2000',
            primary_args=net.nic_args(0) + shared_drive(held, False,
                                                        dev_extra=stop),
            backup_args=net.nic_args(1) + shared_drive(img, True,
                                                       dev_extra=stop))
        pcon.wait(r'DISK verify ok', 240, p)
        client, cstop = net.client(self.workdir, conns=4)
        verified = SharedDiskTest.verified
        for outage in range(3):
            time.sleep(2)
            fs.ctl('fail')
            self.wait_event(p, 'BLOCK_IO_ERROR', 60)
            wait_runstate(p, ('io-error',), 30)
            for _ in range(5):
                time.sleep(1)
                if p.cmd('query-status')['status'] == 'io-error':
                    p.cmd('cont')
            fs.ctl('heal')
            SharedDiskTest.cont_until_running(p)
            done = verified(pcon.text())
            deadline = time.monotonic() + 120
            while verified(pcon.text()) < done + 1:
                self.assertLess(time.monotonic(), deadline,
                                'the guest stopped verifying its disk')
                self.assertEqual(b.cmd('x-query-ft')['state'], 'streaming')
                time.sleep(0.5)
        self.assertGreaterEqual(fs.state()['failed'], 3)
        res = net.client_result(client, cstop)
        self.log.info('client: %s', res)
        for e in res['echo']:
            self.assertIsNone(e['error'], f'echo connection {e["id"]}')
            self.assertGreater(e['verified'], 0)
        pi = p.cmd('x-query-ft')
        deadline = time.monotonic() + 60
        while b.cmd('x-query-ft')['log-consumed'] < pi['log-written']:
            info = b.cmd('x-query-ft')
            self.assertEqual(info['state'], 'streaming', info)
            self.assertLess(time.monotonic(), deadline,
                            'the backup did not follow')
            time.sleep(0.5)
        info = b.cmd('x-query-ft')
        self.assertEqual(info['state'], 'streaming', info)
        self.assertEqual(info['digest']['mismatches'], 0, info)
        self.assertGreater(info['digest']['checks'], 5, info)
        self.assertEqual(wait_runstate(b, ('running',), 30), 'running')
        self.assertNotIn('I/O error', pcon.text())

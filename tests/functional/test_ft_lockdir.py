#!/usr/bin/env python3
#
# The lock directory decides who goes live, so QEMU refuses one that
# others could tamper with, and never follows or waits on something that
# is not a regular file in a record's place (issue 14).  Each case starts
# a real QEMU with rrlock= and checks the error it stops with; a FIFO
# at the record's path used to hang it for ever in open().
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import time
import unittest
import uuid

from ft_test import FTTestCase

VM_UUID = str(uuid.uuid4())


class LockDir(FTTestCase):

    timeout = 300

    def start(self, lock_dir, name):
        """A primary with rrlock=@lock_dir: it must stop at startup."""
        vm, _ = self.make_vm(name, self.guest_args(), rr='record',
                             icount_extra=f',rrchardev=ftlog,rrlock={lock_dir}',
                             args=['-uuid', VM_UUID, '-chardev',
                                   'socket,id=ftlog,host=127.0.0.1,port=1'])
        return vm

    def refused(self, lock_dir, name, msg):
        vm = self.start(lock_dir, name)
        t0 = time.monotonic()
        self.assert_refused(vm, msg)
        # Refused at once: not after waiting on anything
        self.assertLess(time.monotonic() - t0, 60)

    def lock_dir(self, mode):
        d = self.scratch(f'lock-{mode:o}')
        os.makedirs(d, exist_ok=True)
        os.chmod(d, mode)
        return d

    def record_path(self, d, gen=1):
        return os.path.join(d, f'ft-{VM_UUID}.{gen}.lock')

    def test_group_writable(self):
        self.refused(self.lock_dir(0o770), 'g', 'writable by group or others')

    def test_world_writable_sticky(self):
        """Like /tmp: sticky, but anyone may create records there."""
        self.refused(self.lock_dir(0o1777), 'o',
                     'writable by group or others')

    def test_other_owner(self):
        if os.geteuid() != 0:
            # Not root: any directory root owns will do
            self.refused('/', 'owner', 'owned by another user')
            return
        d = self.lock_dir(0o755)
        os.chown(d, 65534, 65534)
        try:
            self.refused(d, 'owner', 'owned by another user')
        finally:
            os.chown(d, 0, 0)

    def test_fifo_record(self):
        """A FIFO in the record's place: before, open() hung QEMU."""
        d = self.lock_dir(0o755)
        os.mkfifo(self.record_path(d))
        self.refused(d, 'fifo', 'lock record is not a regular file')

    def test_symlink_record(self):
        """A symlink to a record elsewhere is not followed."""
        d = self.lock_dir(0o755)
        target = self.scratch('elsewhere.lock')
        with open(target, 'w') as f:
            f.write('anything\n')
        os.symlink(target, self.record_path(d))
        self.refused(d, 'symlink', 'lock record is not a regular file')

    def test_good_dir_accepted(self):
        """The control: a 0755 directory of ours passes these checks (the
        primary then fails only to reach its backup at port 1)."""
        vm = self.start(self.lock_dir(0o755), 'good')
        with self.assertRaises(Exception):
            vm.launch()
        log = vm.get_log() or ''
        self.vms.remove(vm)
        self.assertNotIn('rrlock: ', log)
        self.assertIn('Connection refused', log)


if __name__ == '__main__':
    unittest.main()

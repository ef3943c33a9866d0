#!/usr/bin/env python3
#
# A host's storage path that can hold writes back, or fail: a FUSE file
# system (python3-fusepy) that passes a directory through, and, while
# told to, keeps each write it receives waiting instead of doing it, or
# fails every read and write with EIO (storage that went away).  The writer's
# system call waits too: the write has left the process for the host's
# storage stack, and a kill -9 of the process does not recall it.  When
# released, the held writes go to the directory, in the order they came.
# Killing this process instead (fencing the host) fails them: the kernel
# ends the requests with ENOTCONN, and nothing reaches the directory.
#
#   holdfs.py SOURCE MOUNTPOINT STATUS
#
# STATUS.ctl, a named pipe, takes the commands: a line "hold" holds the
# writes from then on, "release" releases them (and stops holding);
# "fail" fails reads and writes from then on, "heal" stops failing them.
# STATUS is rewritten as "holding=0|1 held=N done=N failing=0|1 failed=N"
# after every change (done: held writes done since the start; failed:
# reads and writes failed since the start).  The file
# system reports the source's inode numbers, as an NFS client sees the
# server's, so QEMU's check that both sides open the same file holds.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import errno
import os
import sys
import threading

from fusepy import FUSE, FuseOSError, Operations


class HoldFS(Operations):

    def __init__(self, root, status):
        self.root = root
        self.status = status
        self.cond = threading.Condition()
        self.holding = False
        self.generation = 0     # releases so far
        self.held = 0
        self.done = 0
        self.failing = False
        self.failed = 0
        self.report()

    def report(self):
        tmp = self.status + '.tmp'
        with open(tmp, 'w') as f:
            f.write(f'holding={int(self.holding)} held={self.held} '
                    f'done={self.done} failing={int(self.failing)} '
                    f'failed={self.failed}\n')
        os.rename(tmp, self.status)

    def control(self, fifo):
        # fuse_main() keeps the main thread: commands come on a thread
        while True:
            with open(fifo) as f:
                for line in f:
                    with self.cond:
                        if line.strip() == 'hold':
                            self.holding = True
                        elif line.strip() == 'release':
                            self.holding = False
                            self.generation += 1
                            self.cond.notify_all()
                        elif line.strip() in ('fail', 'heal'):
                            self.failing = line.strip() == 'fail'
                        self.report()

    def real(self, path):
        return os.path.join(self.root, path.lstrip('/'))

    # -- the pass-through -------------------------------------------------

    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self.real(path))
        except OSError as e:
            raise FuseOSError(e.errno) from e
        return {k: getattr(st, k) for k in (
            'st_mode', 'st_ino', 'st_nlink', 'st_uid', 'st_gid', 'st_size',
            'st_atime', 'st_mtime', 'st_ctime', 'st_blocks')}

    def readdir(self, path, fh):
        return ['.', '..'] + os.listdir(self.real(path))

    def statfs(self, path):
        st = os.statvfs(self.real(path))
        return {k: getattr(st, k) for k in (
            'f_bavail', 'f_bfree', 'f_blocks', 'f_bsize', 'f_favail',
            'f_ffree', 'f_files', 'f_flag', 'f_frsize', 'f_namemax')}

    def open(self, path, flags):
        # The kernel sends O_DIRECT I/O as it came; the source need not
        # be opened so (its page cache is coherent with its other users).
        try:
            return os.open(self.real(path), flags & ~os.O_DIRECT)
        except OSError as e:
            raise FuseOSError(e.errno) from e

    def fail(self):
        """Fail this read or write if told to (with self.cond held)."""
        if self.failing:
            self.failed += 1
            self.report()
            raise FuseOSError(errno.EIO)

    def read(self, path, size, offset, fh):
        with self.cond:
            self.fail()
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        with self.cond:
            self.fail()
            if self.holding:
                gen = self.generation
                self.held += 1
                self.report()
                while self.generation == gen:
                    self.cond.wait()
                self.held -= 1
                self.done += 1
                n = os.pwrite(fh, data, offset)
                self.report()
                return n
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        os.truncate(self.real(path), length)

    def fsync(self, path, datasync, fh):
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)

    def fallocate(self, *args):
        raise FuseOSError(errno.EOPNOTSUPP)


def main():
    if len(sys.argv) != 4:
        raise SystemExit('usage: holdfs.py SOURCE MOUNTPOINT STATUS')
    src, mnt, status = sys.argv[1:]
    fs = HoldFS(os.path.abspath(src), os.path.abspath(status))
    fifo = status + '.ctl'
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    threading.Thread(target=fs.control, args=(fifo,), daemon=True).start()
    FUSE(fs, mnt, foreground=True, nothreads=False, use_ino=True,
         default_permissions=False)


if __name__ == '__main__':
    main()

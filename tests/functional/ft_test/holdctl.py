# The client side of ft_test/holdfs.py: a FUSE storage path, run as a
# process of its own, that holds writes back or fails I/O on command.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class HoldFs:
    """ft_test/holdfs.py over @src at @mnt; @ctl sends it a command."""

    def __init__(self, src, mnt, status):
        self.mnt, self.status = mnt, status
        os.makedirs(mnt, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, 'holdfs.py'),
             src, mnt, status],
            stdout=subprocess.DEVNULL, stderr=open(status + '.log', 'w'))
        deadline = time.monotonic() + 20
        while not os.path.ismount(mnt):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError('holdfs did not mount')
            time.sleep(0.1)

    def ctl(self, cmd):
        with open(self.status + '.ctl', 'w') as f:
            f.write(cmd + '\n')

    def state(self):
        with open(self.status) as f:
            return {k: int(v) for k, v in
                    (kv.split('=') for kv in f.read().split())}

    def wait(self, timeout, **want):
        deadline = time.monotonic() + timeout
        while True:
            st = self.state()
            if all(st[k] >= v for k, v in want.items()):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f'holdfs: {st}, wanted {want}')
            time.sleep(0.05)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        subprocess.run(['umount', '-l', self.mnt], check=False,
                       stderr=subprocess.DEVNULL)


def held_image(case, size_mb=16):
    """A raw image of @size_mb MiB in @case's scratch directory, under a
    HoldFs (closed at @case's cleanup).  Returns (the HoldFs, the image's
    path through it, its path below it)."""
    src = case.scratch('storage')
    os.makedirs(src, exist_ok=True)
    img = os.path.join(src, 'shared.img')
    with open(img, 'wb') as f:
        f.truncate(size_mb << 20)
    fs = HoldFs(src, case.scratch('host-a'), case.scratch('holdfs'))
    case.addCleanup(fs.close)
    return fs, os.path.join(fs.mnt, 'shared.img'), img

# An ext4 file system on the shared disk, for the guest's fs workload
# (guest/init: ft.work=fs), made and checked on the host.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import hashlib
import os
import re
import subprocess

from .config import QEMU_IMG
from .workloads import pattern


def mkfs_ext4(path, size_mb, fmt='raw'):
    """A fresh ext4 image of format @fmt (busybox in the guest has no
    mkfs.ext4, so the host makes it)."""
    raw = path if fmt == 'raw' else path + '.raw'
    with open(raw, 'wb') as f:
        f.truncate(size_mb << 20)
    subprocess.run(['mkfs.ext4', '-q', '-F', '-E',
                    'lazy_itable_init=0,lazy_journal_init=0', raw],
                   check=True)
    if fmt != 'raw':
        subprocess.run([QEMU_IMG, 'convert', '-f', 'raw', '-O', fmt, raw,
                        path], check=True)
        os.unlink(raw)
    return path


def fs_pattern_sha(loop, j, kib):
    """sha256 of the guest's fs file for @loop (guest/init: pattern)."""
    return hashlib.sha256(pattern(f'ftfs loop={loop} file={j}',
                                  kib * 1024)).hexdigest()


def image_file_sha(image, name):
    """sha256 of /@name in the ext4 @image, read on the host."""
    out = subprocess.run(['debugfs', '-R', f'cat /{name}', image],
                         check=True, capture_output=True).stdout
    return hashlib.sha256(out).hexdigest()


def fs_checked(text):
    """The fs workload's markers in console @text: no failure; returns
    the number of verify rounds (each re-reads every file it completed)."""
    fails = re.findall(r'^FS (?:verify|write) FAIL.*$|^FT-ERROR.*$', text,
                       re.M)
    if fails:
        raise AssertionError(f'the guest saw bad file data: {fails}')
    return len(re.findall(r'^FS verify ok', text, re.M))


def check_image(img, fmt, files, loops, kib):
    """After the guest's clean shutdown: the image checks clean (qemu-img
    check, e2fsck -fn) and each file the guest reported (@files: [(j,
    sha)]) holds the data of its last loop of @loops, on the host."""
    if fmt != 'raw':
        chk = subprocess.run([QEMU_IMG, 'check', '-f', fmt, img],
                             capture_output=True, text=True)
        if chk.returncode:
            raise AssertionError(chk.stdout + chk.stderr)
        subprocess.run([QEMU_IMG, 'convert', '-f', fmt, '-O', 'raw', img,
                        img + '.raw'], check=True)
        img += '.raw'
    fsck = subprocess.run(['e2fsck', '-fn', img], capture_output=True,
                          text=True)
    if fsck.returncode:
        raise AssertionError(fsck.stdout + fsck.stderr)
    for j, sha in files:
        j = int(j)
        last = max(k for k in range(1, loops + 1) if k % 8 == j)
        if sha != fs_pattern_sha(last, j, kib):
            raise AssertionError(f'file {j}: the guest read {sha}')
        if image_file_sha(img, f'f{j}') != sha:
            raise AssertionError(f'file {j} on the image differs')

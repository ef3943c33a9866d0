# Paths, binaries and constants of the qemu-ft functional tests.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import sys

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__),
                                   '..', '..', '..'))
# The tree's python/qemu (QEMUMachine, QMP), as QEMU's own functional
# tests find it.
sys.path.insert(0, os.path.join(TOP, 'qemu', 'python'))

BUILD = os.environ.get('FT_BUILD_DIR', os.path.join(TOP, 'build'))
QEMU_BIN = os.environ.get('FT_QEMU',
                          os.path.join(BUILD, 'qemu', 'qemu-system-x86_64'))
QEMU_IMG = os.path.join(BUILD, 'qemu', 'qemu-img')
GUEST_DIR = os.environ.get('FT_GUEST_DIR', os.path.join(BUILD, 'guest'))
FIRMWARE_DIRS = ['/usr/share/qemu', '/usr/share/seabios']
LOG_DIR = os.path.join(BUILD, 'test-logs')

# Kernel arguments that make the throw-away test guest boot faster.
FAST_BOOT = ('console=ttyS0 quiet mitigations=off cryptomgr.notests '
             'initcall_blacklist=crypto_kdf108_init init_on_alloc=0')


def missing():
    """What of QEMU and the test guest is not built: [(what, path)]."""
    return [(what, path) for path, what in (
        (QEMU_BIN, 'qemu-system-x86_64'),
        (os.path.join(GUEST_DIR, 'vmlinux'), 'guest kernel'),
        (os.path.join(GUEST_DIR, 'initramfs.cpio.gz'), 'guest initramfs'))
        if not os.path.exists(path)]

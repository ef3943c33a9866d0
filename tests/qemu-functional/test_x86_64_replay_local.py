#!/usr/bin/env python3
#
# QEMU's record/replay functional test (tests/functional/
# test_x86_64_replay.py) on the project's locally built guest.
#
# The same scenarios as QEMU's test, through QEMU's own ReplayKernelBase
# (imported from QEMU's tree, not copied): record a boot with
# -icount rr=record, check the log with scripts/replay-dump.py, replay it
# and check that the replay reaches the same console output and ends.
# QEMU's test boots a tuxboot buildroot kernel and root file system,
# downloaded assets that cannot be fetched here; this one boots
# build/guest/ (scripts/build-guest.sh: a Debian kernel and a busybox
# initramfs whose /init is guest/init).
#
#   pc  + virtio-blk, q35 + ide-hd: the disk behind driver=blkreplay over
#   a qcow2 overlay (snapshot=on), virtio-net on a user netdev behind
#   filter-replay.  The guest brings eth0 up (static address, the link
#   must have carrier), writes a pattern to the raw disk, drops its caches
#   and reads it back with O_DIRECT; the test waits for the NIC line and
#   for the read-back hash, which it computes itself.
#   plain: -icount rr=record/replay without disk or NIC (run_rr without
#   device arguments); the guest runs timers and a CPU job whose result
#   the test computes itself.
#
# Run it the way QEMU runs its functional tests (scripts/qemu-tests.sh
# does): from the QEMU source tree (ReplayKernelBase calls
# ./scripts/replay-dump.py), with
#   QEMU_TEST_QEMU_BINARY=<build>/qemu/qemu-system-x86_64
#   QEMU_BUILD_ROOT=<build>/qemu
#   PYTHONPATH=<qemu>/python:<qemu>/tests/functional
#
# SPDX-License-Identifier: GPL-2.0-or-later

import hashlib
import logging
import os
import struct
from subprocess import check_call, DEVNULL

from qemu_test import get_qemu_img
from replay_kernel import ReplayKernelBase

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
GUEST_DIR = os.environ.get('FT_GUEST_DIR', os.path.join(TOP, 'build', 'guest'))
KERNEL = os.path.join(GUEST_DIR, 'vmlinux')
INITRD = os.path.join(GUEST_DIR, 'initramfs.cpio.gz')

# Kernel arguments that make the throw-away guest boot faster (as the
# project's own functional tests, tests/functional/ftlib.py).
FAST_BOOT = ('quiet mitigations=off cryptomgr.notests '
             'initcall_blacklist=crypto_kdf108_init init_on_alloc=0')
GUEST_IP = '10.0.2.15/24'
DISK_MB = 1
CPU_ITERS = 3


def pattern(text, nbytes):
    """guest/init's pattern(TEXT, BYTES):
    yes "TEXT" | od -v -A d -t x8 | head -c BYTES"""
    unit = (text + '\n').encode()
    src = unit * ((nbytes // 42 + 2) * 16 // len(unit) + 2)
    out = bytearray()
    off = 0
    while len(out) < nbytes:
        a, b = struct.unpack_from('<QQ', src, off)
        out += b'%07d %016x %016x\n' % (off, a, b)
        off += 16
    return bytes(out[:nbytes])


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def cpu_result(iters):
    """guest/init's cpu workload: h = sha256(h "\\n" buf), iters times."""
    buf = pattern('ftcpu', 262144)
    h = ''
    for _ in range(iters):
        h = sha256(h.encode() + b'\n' + buf)
    return h


class X86ReplayLocal(ReplayKernelBase):

    def setUp(self):
        super().setUp()
        for path in (KERNEL, INITRD):
            if not os.path.exists(path):
                # counted as a failure by scripts/test.sh, like any skip
                self.skipTest(f'{path} not built: run scripts/build-guest.sh')

    def wait_for_console_pattern(self, success_message, vm=None):
        """@success_message: a sequence of (line, failure) pairs, waited for
        in turn; the guest printing @failure before @line fails the test
        at once, so does the end of the console (QEMU ended).

        As qemu_test.cmd.wait_for_console_pattern, which this replaces
        because it cannot tell the end of the console: when QEMU ends
        (a replay that stops on a bad log, a crash), its loop spins until
        the harness's timeout."""
        console = logging.getLogger('console')
        for success, failure in success_message:
            self.log.debug(f"Console: waiting for '{success}' "
                           f"(failure '{failure}')")
            msg = b''
            while True:
                c = vm.console_socket.recv(1)
                if not c:
                    console.debug(msg.decode(errors='replace').strip())
                    try:
                        vm.wait(timeout=10)
                    except Exception:   # noqa: BLE001  only for the message
                        pass
                    self.fail(f"end of the console (QEMU exited with "
                              f"{vm.exitcode()}), expected '{success}'")
                msg += c
                if success.encode() in msg:
                    break
                if failure and failure.encode() in msg:
                    console.debug(msg.decode(errors='replace').strip())
                    self.fail(f"'{failure}' found in console, "
                              f"expected '{success}' before it")
                if c == b'\n':
                    console.debug(msg.decode(errors='replace').strip())
                    msg = b''
            console.debug(msg.decode(errors='replace').strip())

    def command_line(self, **knobs):
        return (self.KERNEL_COMMON_COMMAND_LINE + 'console=ttyS0 ' +
                FAST_BOOT + ''.join(f' ft.{k}={v}' for k, v in knobs.items()))

    def do_test_x86(self, machine, blkdevice, devroot):
        self.require_netdev('user')
        self.set_machine(machine)
        self.cpu = 'Nehalem'

        raw_disk = self.scratch_file('disk.raw')
        with open(raw_disk, 'wb') as f:
            f.truncate(4 << 20)
        disk = self.scratch_file('scratch.qcow2')
        qemu_img = get_qemu_img(self)
        check_call([qemu_img, 'create', '-f', 'qcow2', '-b', raw_disk,
                    '-F', 'raw', disk], stdout=DEVNULL, stderr=DEVNULL)

        # romfile=: no iPXE option ROM, which only slows the boot down.
        args = ('-m', '256', '-initrd', INITRD,
                '-drive', 'file=%s,snapshot=on,id=hd0,if=none' % disk,
                '-drive', 'driver=blkreplay,id=hd0-rr,if=none,image=hd0',
                '-device', '%s,drive=hd0-rr' % blkdevice,
                '-netdev', 'user,id=vnet,hostfwd=:127.0.0.1:0-:22',
                '-device', 'virtio-net,netdev=vnet,romfile=',
                '-object', 'filter-replay,id=replay,netdev=vnet')

        kernel_command_line = self.command_line(
            ip=GUEST_IP, gw='10.0.2.2', work='disk', disk_dev=devroot,
            disk_mb=DISK_MB, disk_loops=1)
        written = sha256(pattern('ftdisk loop=1', DISK_MB << 20))
        # Each line with the one the guest prints after it if it did not
        # print it: FT-NET comes before FT-READY (no NIC, no carrier, no
        # address: FT-NET missing or different), the disk lines before
        # FT-DONE and DISK done (no disk, write or read-back failed).
        console_pattern = (
            ('FT-BOOT', 'Kernel panic - not syncing'),
            (f'FT-NET eth0 {GUEST_IP} carrier=1', 'FT-READY'),
            (f'DISK dev={devroot} bytes={4 << 20} mb={DISK_MB} loops=1',
             'FT-DONE'),
            (f'DISK verify ok loop=1 sha256={written}', 'DISK done'))
        self.run_rr(KERNEL, kernel_command_line, console_pattern, shift=5,
                    args=args)

    def test_pc(self):
        self.do_test_x86('pc', 'virtio-blk', 'vda')

    def test_q35(self):
        self.do_test_x86('q35', 'ide-hd', 'sda')

    def test_plain(self):
        """-icount rr=record/replay of a boot without disk or NIC."""
        self.cpu = 'Nehalem'
        kernel_command_line = self.command_line(
            work='ticker,cpu', ticks=2, cpu_iters=CPU_ITERS)
        console_pattern = (
            ('FT-BOOT', 'Kernel panic - not syncing'),
            (f'CPU result {cpu_result(CPU_ITERS)}', 'FT-DONE'),
            ('FT-DONE', None))
        self.run_rr(KERNEL, kernel_command_line, console_pattern,
                    args=('-m', '256', '-initrd', INITRD))


if __name__ == '__main__':
    ReplayKernelBase.main()

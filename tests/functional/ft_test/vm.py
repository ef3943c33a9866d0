# QEMU processes booting the test guest, made in a scratch directory
# (Workdir), and what the tests ask them over QMP.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import shutil
import tempfile
import time

from qemu.machine import QEMUMachine

from .config import FIRMWARE_DIRS, GUEST_DIR, LOG_DIR, QEMU_BIN
from .console import Console
from .utils import make_disk, sha256_file


class Workdir:
    """A scratch directory under build/test-logs and the VMs made in it.

    close() (or the end of a with block) kills every VM still running and
    removes the directory, unless the work failed (the block raised, or
    close(keep=True)) or FT_KEEP_LOGS is set.  With @path, the directory
    is that one, and it is always kept.
    """

    def __init__(self, name, path=None):
        if path:
            os.makedirs(path, exist_ok=True)
            self.path, self.keep = path, True
        else:
            os.makedirs(LOG_DIR, exist_ok=True)
            self.path = tempfile.mkdtemp(prefix=name + '.', dir=LOG_DIR)
            self.keep = bool(os.environ.get('FT_KEEP_LOGS'))
        self.vms = []

    def scratch(self, name):
        return os.path.join(self.path, name)

    def make_disk(self, name, size_mb):
        return make_disk(self.scratch(name), size_mb)

    def make_vm(self, name, append, rr=None, rrfile=None, shift=5,
                args=(), memory=256, no_shutdown=False, icount_extra='',
                hold=None, wrapper=(), qemu=None, machine='q35'):
        """A q35 (or @machine), 1 vCPU, Nehalem VM booting the test guest.

        Its console goes to <workdir>/<name>.console; returns (vm, console).
        @shift None: no -icount at all (plain TCG).
        @hold: the console's ft-hold switch (None: a plain file chardev).
        @qemu: another qemu-system-x86_64 (such as the ASan build).
        """
        vm = QEMUMachine(qemu or QEMU_BIN, name=name, base_temp_dir=self.path,
                         log_dir=self.path, wrapper=wrapper)
        console = Console(self.scratch(name + '.console'))
        vm.add_args('-machine', machine, '-cpu', 'Nehalem', '-smp', '1',
                    '-m', str(memory), '-nodefaults',
                    '-kernel', os.path.join(GUEST_DIR, 'vmlinux'),
                    '-initrd', os.path.join(GUEST_DIR, 'initramfs.cpio.gz'),
                    '-append', append)
        if shift is not None:
            icount = f'shift={shift}'
            if rr:
                icount += f',rr={rr}'
            if rr and rrfile:
                icount += f',rrfile={rrfile}'
            vm.add_args('-icount', icount + icount_extra)
        if hold is None:
            vm.add_args('-serial', f'file:{console.path}')
        else:
            # The output rule's per-chardev switch (ft-hold)
            vm.add_args('-chardev', f'file,id=ser0,path={console.path},'
                        f'ft-hold={"on" if hold else "off"}',
                        '-serial', 'chardev:ser0')
        for d in FIRMWARE_DIRS:
            vm.add_args('-L', d)
        if no_shutdown:
            vm.add_args('-no-shutdown')
        vm.add_args(*args)
        self.vms.append(vm)
        return vm, console

    def close(self, keep=False):
        for vm in self.vms:
            kill(vm)
        if not (keep or self.keep):
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        self.close(keep=exc_type is not None)


def kill(vm):
    """Kill @vm if it still runs; best effort, never raises."""
    try:
        vm.shutdown(hard=True)
    except Exception:   # noqa: BLE001  best effort on the way out
        pass


# -- QMP ----------------------------------------------------------------

def query_ft(vm):
    """x-query-ft, and how long it took in ms."""
    t0 = time.monotonic()
    r = vm.cmd('x-query-ft')
    return r, (time.monotonic() - t0) * 1000


def query_replay(vm):
    """(monotonic time, icount, guest clock ns)"""
    r = vm.cmd('query-replay')
    return time.monotonic(), r['icount'], r['clock-ns']


def wait_event(vm, name, timeout):
    # A float: qemu.qmp's pull_event() waits for ever on an int.
    ev = vm.event_wait(name, timeout=float(timeout))
    if ev is None:
        raise AssertionError(f'{vm._name}: no {name} event in {timeout}s')
    return ev


def wait_exit(vm, timeout):
    """Wait for @vm's process to end; its exit status."""
    deadline = time.monotonic() + timeout
    while vm.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    popen = getattr(vm, '_popen', None)
    if popen is not None:
        return popen.wait(max(0.1, deadline - time.monotonic()))
    return vm.exitcode()


def wait_runstate(vm, states, timeout):
    deadline = time.monotonic() + timeout
    while True:
        st = vm.cmd('query-status')['status']
        if st in states:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f'VM still {st!r} after {timeout}s, '
                                 f'wanted one of {states}')
        time.sleep(0.1)


def machine_digest(vm, memory_mb, dump):
    """Digest of a stopped VM: all guest RAM (dumped to file @dump on the
    way), CPU registers, icount."""
    vm.cmd('pmemsave', val=0, size=memory_mb << 20, filename=dump)
    ram = sha256_file(dump)
    os.unlink(dump)
    regs = vm.cmd('human-monitor-command',
                  **{'command-line': 'info registers'})
    icount = vm.cmd('query-replay').get('icount')
    return {'ram': ram, 'registers': regs, 'icount': icount}

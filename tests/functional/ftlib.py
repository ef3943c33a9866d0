# Test support for the qemu-ft functional tests.
#
# In the style of QEMU's tests/functional: plain unittest test cases that
# start real qemu-system-x86_64 processes (the tree's python/qemu
# QEMUMachine) booting the project's real test guest.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess
import struct
import sys
import tempfile
import threading
import time
import unittest

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
sys.path.insert(0, os.path.join(TOP, 'qemu', 'python'))

from qemu.machine import QEMUMachine  # noqa: E402
from qemu.machine.machine import AbnormalShutdown  # noqa: E402

from ft_test import tls as fttls  # noqa: E402

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


def free_tcp_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_port(port, timeout, netns=None):
    """Wait until something listens on TCP port (in network namespace)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if netns:
            lines = subprocess.run(['ip', 'netns', 'exec', netns, 'cat',
                                    '/proc/net/tcp'], capture_output=True,
                                   text=True, check=True).stdout
        else:
            with open('/proc/net/tcp') as f:
                lines = f.read()
        for line in lines.splitlines()[1:]:
            fields = line.split()
            if fields[3] == '0A' and \
                    int(fields[1].split(':')[1], 16) == port:
                return
        time.sleep(0.05)
    raise AssertionError(f'nothing listens on port {port} after {timeout}s')


# -- logging channel frames (docs/wire-format.md), for fake peers -------

def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC_T = _crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc = _CRC_T[(crc ^ b) & 0xff] ^ (crc >> 8)
    return crc ^ 0xffffffff


FRAME_HELLO, FRAME_DATA, FRAME_ACK, FRAME_HEARTBEAT, FRAME_END = 1, 2, 3, 4, 5
FRAME_CONFIG = 6
PROTO_VERSION = 2       # ft/ft-frame.h FT_PROTO_VERSION
REPLAY_VERSION = 0xe0200d


def frame(ftype, gen=1, offset=0, payload=b'', flags=0,
          version=PROTO_VERSION):
    hdr = struct.pack('<IBBHIIQ', 0x4c544651, version, ftype, flags, gen,
                      len(payload), offset)
    crc = crc32c(hdr + payload)
    hdr += struct.pack('<I', crc)
    return hdr + struct.pack('<I', crc32c(hdr)) + payload


def hello(role, gen=1, offset=0, replay_version=REPLAY_VERSION,
          vm_id=bytes(16)):
    """HELLO payload; role 1 = primary, 2 = backup."""
    return struct.pack('<B3xIIIQ16sI4x', role, replay_version, gen,
                       1 << 20, offset, vm_id, 100)


def pattern(text, nbytes):
    """The guest's deterministic data (guest/init: pattern), made on the host.

    The same bytes as ``yes TEXT | od -v -A d -t x8 | head -c NBYTES``:
    lines of a 7-digit decimal offset and the two little-endian 64-bit
    words of each 16 bytes of TEXT\\n repeated.  Made here rather than by
    that pipeline, whose producers die of SIGPIPE when head exits.
    """
    unit = (text + '\n').encode()
    src = unit * ((nbytes // 41 + 2) * 16 // len(unit) + 1)
    out = []
    size = 0
    off = 0
    while size < nbytes:
        words = struct.unpack_from('<2Q', src, off)
        line = '%07d %016x %016x\n' % (off, words[0], words[1])
        out.append(line)
        size += len(line)
        off += 16
    return ''.join(out).encode()[:nbytes]


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


class Console:
    """The guest's serial console, written by QEMU to a file."""

    def __init__(self, path):
        self.path = path

    def text(self):
        try:
            with open(self.path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def lines(self):
        return self.text().replace('\r', '').splitlines()

    def wait(self, pattern, timeout, vm=None):
        """Wait for a regex on the console; return its match."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.text().replace('\r', ''))
            if m:
                return m
            if vm is not None and not vm.is_running():
                raise AssertionError(
                    f'QEMU exited (rc={vm.exitcode()}) before {pattern!r}; '
                    f'console tail: {self.text()[-2000:]!r}; '
                    f'log: {vm.get_log()!r}')
            if time.monotonic() > deadline:
                raise AssertionError(
                    f'timeout ({timeout}s) waiting for {pattern!r}; '
                    f'console tail: {self.text()[-2000:]!r}')
            time.sleep(0.05)


class FTTestCase(unittest.TestCase):
    """Base class: scratch directory, guest images, VM construction."""

    timeout = 300
    tls = None      # the logging channel's TLS in make_pair(): see there

    @classmethod
    def setUpClass(cls):
        for path, what in ((QEMU_BIN, 'qemu-system-x86_64'),
                           (os.path.join(GUEST_DIR, 'vmlinux'), 'guest kernel'),
                           (os.path.join(GUEST_DIR, 'initramfs.cpio.gz'),
                            'guest initramfs')):
            if not os.path.exists(path):
                raise unittest.SkipTest(
                    f'{what} not built ({path}); run scripts/test.sh')

    _ft_passed = False

    def _callTestMethod(self, method):
        # unittest's hook around the test body (also used by
        # IsolatedAsyncioTestCase): note whether the body passed, because
        # tearDown cannot tell.
        super()._callTestMethod(method)
        self._ft_passed = True

    def setUp(self):
        os.makedirs(LOG_DIR, exist_ok=True)
        name = self.id().split('.', 1)[-1]
        self.workdir = tempfile.mkdtemp(prefix=name + '.', dir=LOG_DIR)
        self.log = logging.getLogger('ft')
        self.vms = []

    def tearDown(self):
        for vm in self.vms:
            try:
                vm.shutdown(hard=True)
            except Exception:   # noqa: BLE001  best effort on the way out
                pass
        # Keep the logs of a test whose body failed.
        if self._ft_passed and not os.environ.get('FT_KEEP_LOGS'):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def scratch(self, name):
        return os.path.join(self.workdir, name)

    def make_disk(self, name, size_mb):
        path = self.scratch(name)
        with open(path, 'wb') as f:
            f.truncate(size_mb << 20)
        return path

    def guest_args(self, **knobs):
        """Kernel command line with ft.* knobs for the guest's /init."""
        extra = ' '.join(f'ft.{k}={v}' for k, v in knobs.items())
        return f'{FAST_BOOT} {extra}'.strip()

    def make_vm(self, name, append, rr=None, rrfile=None, shift=5,
                args=(), memory=256, no_shutdown=False, icount_extra='',
                hold=None, wrapper=(), qemu=None):
        """A q35, 1 vCPU, Nehalem VM booting the test guest.

        Its console goes to <workdir>/<name>.console; returns (vm, console).
        @qemu: another qemu-system-x86_64 (such as the ASan build).
        """
        vm = QEMUMachine(qemu or QEMU_BIN, name=name, base_temp_dir=self.workdir,
                         log_dir=self.workdir, wrapper=wrapper)
        console = Console(self.scratch(name + '.console'))
        icount = f'shift={shift}'
        if rr and rrfile:
            icount += f',rr={rr},rrfile={rrfile}'
        elif rr:
            icount += f',rr={rr}'
        icount += icount_extra
        vm.add_args('-machine', 'q35', '-cpu', 'Nehalem', '-smp', '1',
                    '-m', str(memory), '-nodefaults',
                    '-icount', icount,
                    '-kernel', os.path.join(GUEST_DIR, 'vmlinux'),
                    '-initrd', os.path.join(GUEST_DIR, 'initramfs.cpio.gz'),
                    '-append', append)
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

    # -- fault-tolerant pairs --------------------------------------------

    def make_pair(self, append, backup_append=None, primary_args=(),
                  backup_args=(), rrx='', backup_rrx=None, primary_server=False,
                  memory=256, backup_memory=None, launch=True,
                  client_port=None, backup_hold=False, host='127.0.0.1',
                  primary_wrapper=(), backup_wrapper=(), tls=None,
                  client_host=None):
        """A primary recording to a backup that replays it live.

        The log goes over TCP on 127.0.0.1; by default the backup is the
        server and waits for the primary.  Unless backup_hold, the
        backup's console shows what it replays (ft-hold=off), so that
        tests can compare it with the primary's.  @tls (by default the
        class's ``tls``) is None, 'x509' (client certificates, and the
        server admits only the client's name) or 'psk'.  @client_host is
        where the client connects, if not to the server's @host.  Returns
        (p, pcon, b, bcon).
        """
        port = free_tcp_port()
        if isinstance(host, tuple):     # (primary's address, backup's)
            srv_host = host[0] if primary_server else host[1]
        else:
            srv_host = host
        server = f'socket,id=ftlog,host={srv_host},port={port},' \
                 'server=on,wait=on'
        client = f'socket,id=ftlog,host={client_host or srv_host},' \
                 f'port={client_port or port}'
        tls = tls or self.tls
        if tls:
            p_tls, b_tls = fttls.pair_args(tls, primary_server)
            primary_args = [*p_tls, *primary_args]
            backup_args = [*b_tls, *backup_args]
            server += fttls.chardev_opts(tls, server=True)
            client += fttls.chardev_opts(tls, server=False)
        p, pcon = self.make_vm(
            'primary', append, rr='record', memory=memory,
            wrapper=primary_wrapper,
            icount_extra=',rrchardev=ftlog' + rrx,
            args=['-chardev', server if primary_server else client,
                  *primary_args])
        b, bcon = self.make_vm(
            'backup', append if backup_append is None else backup_append,
            rr='replay', memory=backup_memory or memory,
            wrapper=backup_wrapper,
            icount_extra=',rrchardev=ftlog' +
            (rrx if backup_rrx is None else backup_rrx),
            hold=backup_hold,
            args=['-chardev', client if primary_server else server,
                  *backup_args])
        self.ft_port = port
        if launch:
            self.launch_pair(p, b, primary_server)
        return p, pcon, b, bcon

    def launch_pair(self, p, b, primary_server=False):
        """Launch both; the server side blocks until the client comes."""
        first, second = (p, b) if primary_server else (b, p)
        err = []

        def run():
            try:
                first.launch()
            except Exception as e:  # noqa: BLE001  re-raised below
                err.append(e)
        t = threading.Thread(target=run)
        t.start()
        wait_port(self.ft_port, 30, getattr(self, 'ft_server_netns', None))
        second.launch()
        t.join(60)
        if err:
            raise err[0]

    def shutdown_checked(self, vm):
        """Quit @vm.  QMP may lose the race with QEMU's exit on 'quit';
        that is tolerated, a crash (death by a signal) is not."""
        try:
            vm.shutdown()
        except AbnormalShutdown:
            self.log.warning('%s: shutdown: exit code %s', vm._name,
                             vm.exitcode())
            self.assertGreaterEqual(vm.exitcode() or 0, 0,
                                    f'{vm._name}: QEMU crashed on quit')

    def assert_refused(self, vm, msg):
        """@vm must fail to start, saying @msg."""
        with self.assertRaises(Exception):
            vm.launch()
        self.assertIn(msg, vm.get_log() or '')
        self.vms.remove(vm)

    @staticmethod
    def ft(vm):
        """x-query-ft, and how long it took in ms."""
        t0 = time.monotonic()
        r = vm.cmd('x-query-ft')
        return r, (time.monotonic() - t0) * 1000

    @staticmethod
    def wait_event(vm, name, timeout):
        ev = vm.event_wait(name, timeout=timeout)
        if ev is None:
            raise AssertionError(f'{vm._name}: no {name} event in {timeout}s')
        return ev

    # -- state digests --------------------------------------------------

    def wait_runstate(self, vm, states, timeout):
        deadline = time.monotonic() + timeout
        while True:
            st = vm.cmd('query-status')['status']
            if st in states:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f'VM still {st!r} after {timeout}s, '
                                     f'wanted one of {states}')
            time.sleep(0.1)

    def machine_digest(self, vm, memory_mb):
        """Digest of a stopped VM: all guest RAM, CPU registers, icount."""
        dump = self.scratch(vm._name + '.ram')
        vm.cmd('pmemsave', val=0, size=memory_mb << 20, filename=dump)
        ram = sha256_file(dump)
        os.unlink(dump)
        regs = vm.cmd('human-monitor-command',
                      **{'command-line': 'info registers'})
        icount = vm.cmd('query-replay').get('icount')
        return {'ram': ram, 'registers': regs, 'icount': icount}

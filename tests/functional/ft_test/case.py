# The unittest base classes of the functional tests, on top of the rest
# of the package: each test gets a work directory (vm.Workdir) whose VMs
# are killed after it, and whose logs stay when the test body failed.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import logging
import os
import re
import time
import unittest

from qemu.machine.machine import AbnormalShutdown

from . import config, failover, vm as ft_vm
from .net import BridgeNet
from .pair import Pair
from .workloads import guest_args


class FTTestCase(unittest.TestCase):
    """Base class: work directory, VMs and pairs, QMP helpers."""

    timeout = 300
    tls = None      # the logging channel's TLS in make_pair(): see Pair

    @classmethod
    def setUpClass(cls):
        for what, path in config.missing():
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
        self.wd = ft_vm.Workdir(self.id().split('.', 1)[-1])
        self.workdir = self.wd.path
        self.vms = self.wd.vms
        self.log = logging.getLogger('ft')

    def tearDown(self):
        # Keep the logs of a test whose body failed.
        self.wd.close(keep=not self._ft_passed)

    def scratch(self, name):
        return self.wd.scratch(name)

    def make_disk(self, name, size_mb):
        return self.wd.make_disk(name, size_mb)

    def log_text(self, vm):
        """The QEMU process's output so far (get_log() has it only once
        QEMU is gone)."""
        path = os.path.join(self.workdir, vm._name + '.log')
        try:
            with open(path, encoding='utf-8', errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def wait_log(self, vm, regex, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.log_text(vm)
            if re.search(regex, out):
                return out
            time.sleep(0.2)
        raise AssertionError(f'no {regex!r} after {timeout}s:\n'
                             f'{self.log_text(vm)[-3000:]}')

    def make_vm(self, name, append, **kw):
        """A VM in the test's work directory: see vm.Workdir.make_vm()."""
        return self.wd.make_vm(name, append, **kw)

    guest_args = staticmethod(guest_args)

    def make_pair(self, append, launch=True, tls=None, **kw):
        """A pair in the test's work directory (see pair.Pair), started
        unless not @launch (then: self.pair.start()); @tls defaults to
        the class's ``tls``.  Returns (p, pcon, b, bcon)."""
        self.pair = Pair(append, workdir=self.wd, tls=tls or self.tls, **kw)
        self.ft_port = self.pair.port
        if launch:
            self.pair.start()
        return tuple(self.pair)

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

    ft = staticmethod(ft_vm.query_ft)
    wait_event = staticmethod(ft_vm.wait_event)
    wait_exit = staticmethod(ft_vm.wait_exit)
    wait_runstate = staticmethod(ft_vm.wait_runstate)

    def machine_digest(self, vm, memory_mb):
        """Digest of a stopped VM: all guest RAM, CPU registers, icount."""
        return ft_vm.machine_digest(vm, memory_mb,
                                    self.scratch(vm._name + '.ram'))


class FailoverCase(FTTestCase):
    """A protected pair: shared lock directory, same -uuid, held output."""

    def make_ft_pair(self, append, **kw):
        """A protected pair (see pair.Pair); returns (p, pcon, b, bcon)."""
        vms = self.make_pair(append, protected=True, **kw)
        self.lock_dir = self.pair.lock_dir
        self.vm_uuid = self.pair.vm_uuid
        return vms

    def lock_path(self, gen=1):
        return self.pair.lock_path(gen)

    def next_trial(self, i, n):
        """Between trials @i and @i+1 of @n in one test: a fresh work
        directory and VMs (the last trial's are cleaned up as usual)."""
        if i + 1 < n:
            self.tearDown()
            self.setUp()

    def kill_primary_trial(self, work, delay, cpu_iters=None, stop=False,
                           from_launch=False):
        """A protected pair running @work; see failover.kill_primary_trial().
        """
        self.make_ft_pair(failover.trial_append(work, cpu_iters))
        return failover.kill_primary_trial(self.pair, work, delay,
                                           cpu_iters, stop, from_launch)


class BridgedCase(FailoverCase):
    """A failover case whose VMs have a NIC on a tap of one bridge
    (self.net, a BridgeNet), with a client namespace beside them."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0 or not os.path.exists('/dev/net/tun'):
            self.skipTest('needs root and /dev/net/tun for taps')
        self.net = BridgeNet(os.getpid() % 1000)
        self.net.__enter__()

    def tearDown(self):
        super().tearDown()
        self.net.cleanup()

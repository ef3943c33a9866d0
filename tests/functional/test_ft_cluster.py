#!/usr/bin/env python3
#
# The fault-tolerant VM under Pacemaker: three corosync + Pacemaker nodes
# (scripts/ftcluster.py: each in its own network, mount and UTS
# namespaces, on one bridge, with a fence agent that really stops a node),
# the VM a promotable clone of ocf:qemu-ft:vm (scripts/ocf/vm), its NIC
# on each node's tap, a client's TCP echo connections beside it.  Real
# faults: kill -9 of the primary's QEMU, a node cut off and fenced, the
# backup's node lost, a planned move.  Each checks that the pair is
# protected again with no human action, every echoed byte, the console
# ticks across every VM that was live, and that two VMs were never live
# at once.
#
# FT_CLUSTER_ROUNDS=N (default 0) adds a series of N kills of the primary
# in a row, the failed node cleaned up after each.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from ft_test import FTTestCase, free_tcp_port, wait_exit
from ft_test.config import FAST_BOOT, FIRMWARE_DIRS, GUEST_DIR, QEMU_BIN, TOP
from ft_test.console import Console, splice_consoles, ticks
from ft_test.net import BridgeNet, ClientNet
from ft_test.tls import make_pki

sys.path.insert(0, os.path.join(TOP, 'scripts'))
from ftcluster import Cluster, install_ocf_agent  # noqa: E402
from ftmgmt import Qmp  # noqa: E402
from ftresource import AGENT, FtResource, LiveWatch, consoles, \
    guest_params  # noqa: E402

ROUNDS = int(os.environ.get('FT_CLUSTER_ROUNDS', '0'))
UUID = '0f7e1d2c-3b4a-4596-8877-665544332211'


class ClusterTest(FTTestCase):

    timeout = 900

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0 or not shutil.which('pacemakerd') or \
                not shutil.which('corosync'):
            self.skipTest('needs root, corosync and pacemaker '
                          '(scripts/install-deps.sh)')
        self.client = None
        self.watch = None
        self.cl = Cluster(20 + os.getpid() % 200, self.scratch('cluster'))
        self.cl.up()
        self.log.info('cluster formed in %.1f s', self.cl.formed_in)
        install_ocf_agent(AGENT)
        self.nodes = list(self.cl.names)
        self.net = ClientNet(self.cl.client_ns)
        self.res = FtResource(self.cl)
        append = f'{FAST_BOOT} ft.work=echo,ticker ' \
            f'ft.ip={BridgeNet.GUEST_IP}/24'
        self.res.create(guest_params(
            self.cl, self.workdir, QEMU_BIN, GUEST_DIR, FIRMWARE_DIRS,
            append, BridgeNet.MAC, UUID))

    def tearDown(self):
        if self.watch:
            self.watch.stop()
        if self.client:
            try:
                self.net.client_result(*self.client, timeout=30)
            except Exception:   # noqa: BLE001  the test failed already
                pass
        status = self.cl.status() if self.cl.live_nodes() else ''
        with open(self.scratch('crm_mon.txt'), 'w') as f:
            f.write(status)
        for n in self.nodes:
            for name in ('agent.log', 'qemu.log'):
                try:
                    shutil.copy(self.res.path(n, name),
                                self.scratch(f'{n}-{name}'))
                except (OSError, KeyError):
                    pass
        self.cl.down()
        super().tearDown()

    # -- helpers ---------------------------------------------------------

    def start(self):
        """Wait for the first protected pair and a client on the guest;
        returns (primary node, backup node, generation)."""
        t0 = time.time()
        (p, b, gen), t = self.res.wait_protected(self.nodes, timeout=300)
        self.log.info('protected (%s primary, %s backup, generation %d) '
                      '%.1f s after the resource was created', p, b, gen,
                      t - t0)
        self.cl.wait(lambda: any('FT-READY' in c.text()
                                 for c in self.consoles()),
                     timeout=180, what='the guest booted (FT-READY)')
        self.client = self.net.client(self.workdir, conns=2)
        time.sleep(3)
        self.watch = LiveWatch(self.res, self.nodes)
        self.watch.start()
        return p, b, gen

    def consoles(self):
        """The VMs' consoles in the order they started."""
        return [Console(f) for f in consoles(self.workdir)]

    def roles_are(self, promoted, unpromoted):
        def check():
            roles = self.res.roles()
            return roles.get(promoted) == 'Promoted' and \
                roles.get(unpromoted) == 'Unpromoted'
        self.cl.wait(check, timeout=60, what=f'{promoted} promoted, '
                     f'{unpromoted} unpromoted')

    def finish(self, live, figures):
        """Wait for more ticks; check the client, the consoles and that no
        two VMs were live at once; log @figures."""
        con = self.consoles()[-1]
        n = max(map(int, re.findall(r'^TICK (\d+)\r?$', con.text(), re.M)),
                default=0)
        con.wait(rf'^TICK {n + 3}\r?$', 60)
        self.watch.stop()
        self.assertIsNone(self.watch.double, 'two VMs live at once')
        res = self.net.client_result(*self.client)
        self.client = None
        for e in res['echo']:
            self.assertIsNone(e['error'], f'echo connection {e["id"]}')
            self.assertGreater(e['verified'], 0)
        stream = ''
        for c in self.consoles():
            text = c.text().replace('\r', '')
            if text:
                stream, _ = splice_consoles(stream, text) if stream else \
                    (text, 0)
        seen = ticks(stream)
        figures['ticks'] = len(seen)
        figures['echo MiB'] = sum(e['verified'] for e in res['echo']) >> 20
        figures['max stall s'] = max(e['max_stall_s'] for e in res['echo'])
        figures['live samples'] = self.watch.samples
        print(f'\n{self.id().rsplit(".", 1)[-1]}: ' +
              ', '.join(f'{k} {v:.2f}' if isinstance(v, float) else
                        f'{k} {v}' for k, v in figures.items()),
              file=sys.stderr)

    def failover(self, p, b, gen, fault):
        """@fault on the primary's node @p; the backup on @b goes live
        and is protected again on the third node.  Returns figures."""
        third = next(n for n in self.nodes if n not in (p, b))
        t0 = time.time()
        fault(p)
        t_live, info = self.res.wait_live(b)
        (p2, b2, gen2), t_prot = self.res.wait_protected(
            [b, third], min_gen=gen, timeout=120)
        self.assertEqual((p2, b2), (b, third))
        self.roles_are(b, third)
        # Protected again (x-ft-protect is refused before): its disk
        # writes were let go (rrfence=on) once the old primary's QEMU had
        # exited or its node was fenced
        with open(self.res.path(b, 'agent.log')) as f:
            released = re.findall(r'disk writes released (\d+) ms',
                                  f.read())
        self.assertTrue(released, 'the agent released no writes')
        return {'kill to live s': t_live - t0,
                'failover-ms': info.get('failover-ms', 0.0),
                'fence-ms': float(released[-1]),
                'kill to protected s': t_prot - t0, 'generation': gen2}

    def kill_qemu(self, node):
        os.kill(self.res.qemu_pid(node), signal.SIGKILL)

    # -- the tests -------------------------------------------------------

    def test_kill_primary(self):
        """kill -9 of the primary's QEMU: its backup goes live, Pacemaker
        promotes it and starts a new backup on the third node."""
        p, b, gen = self.start()
        figures = self.failover(p, b, gen, self.kill_qemu)
        for i in range(ROUNDS):
            # The node of the killed QEMU may take an instance again
            self.res.cleanup()
            gen, p, b = figures['generation'], b, \
                self.res.protected(self.nodes)[1]
            figures = self.failover(p, b, gen, self.kill_qemu)
            print(f'\nround {i + 1}: ' + ', '.join(
                f'{k} {v:.2f}' if isinstance(v, float) else f'{k} {v}'
                for k, v in figures.items()), file=sys.stderr)
        self.finish(b, figures)

    def test_node_loss(self):
        """The primary's node lost (its links down, its processes
        killed): the backup goes live by the lock, the others fence the
        node, and a new backup starts on the third node."""
        p, b, gen = self.start()
        figures = self.failover(p, b, gen, self.cl.kill_node)
        with open(self.cl.fence_log) as f:
            self.assertIn(f'off {p}', f.read())
        self.finish(b, figures)

    def test_partition(self):
        """The primary's node cut off from the network, with the shared
        storage behind it, but running: its VM cannot win the lock, the
        backup wins it and goes live, the others fence the node."""
        p, b, gen = self.start()
        lock = os.path.join(self.workdir, 'lock')
        figures = self.failover(p, b, gen,
                                lambda n: self.cl.cut(n, storage=[lock]))
        self.cl.wait(lambda: not self.cl.alive(p), timeout=60,
                     what=f'{p} fenced')
        with open(self.cl.fence_log) as f:
            self.assertIn(f'off {p}', f.read())
        self.finish(b, figures)

    def test_hung_primary(self):
        """The primary's QEMU stopped for good (SIGSTOP): its backup goes
        live, but holds its disk writes while the stopped QEMU may still
        write; 30 s on, the old node's monitor fails it, its stop kills
        it, and the survivor's writes go; a new backup follows."""
        p, b, gen = self.start()
        pid = self.res.qemu_pid(p)
        t0 = time.time()
        os.kill(pid, signal.SIGSTOP)
        try:
            self.res.wait_live(b)
            time.sleep(10)
            st = self.res.query(b)
            self.assertTrue(st.get('writes-fenced'), st)
            (p2, b2, gen2), t_prot = self.res.wait_protected(
                [b, next(n for n in self.nodes if n not in (p, b))],
                min_gen=gen, timeout=180)
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.assertEqual(p2, b)
        with open(self.res.path(b, 'agent.log')) as f:
            released = re.findall(r'disk writes released (\d+) ms',
                                  f.read())
        # held until Pacemaker stopped the old QEMU: its monitor failed
        # (30 s of QMP silence, or the monitor's own timeout)
        with open(self.res.path(p, 'agent.log')) as f:
            self.assertIn('stopping a QEMU stopped by a signal', f.read())
        self.assertGreater(float(released[-1]), 15000)
        self.finish(b, {'stop to protected s': t_prot - t0,
                        'fence-ms': float(released[-1])})

    def backup_lost(self, fault, figure):
        """@fault on the backup's node: the primary runs on alone, and a
        new backup is started on the third node."""
        p, b, gen = self.start()
        third = next(n for n in self.nodes if n not in (p, b))
        t0 = time.time()
        fault(b)
        (p2, b2, gen2), t_prot = self.res.wait_protected(
            [p, third], min_gen=gen, timeout=120)
        self.assertEqual((p2, b2), (p, third))
        self.roles_are(p, third)
        self.finish(p, {figure: t_prot - t0})

    def test_backup_node_loss(self):
        """The backup's node lost: the primary runs on alone, and a new
        backup is started on the third node."""
        self.backup_lost(self.cl.kill_node, 'loss to protected s')

    def test_kill_backup(self):
        """kill -9 of the backup's QEMU: the primary wins the lock and
        runs on alone; Pacemaker starts a new backup on the third node."""
        self.backup_lost(self.kill_qemu, 'kill to protected s')

    def test_planned_move(self):
        """crm_resource --move --promoted to the backup's node: a
        switch-over, no failover; the old primary becomes its backup."""
        p, b, gen = self.start()
        t0 = time.time()
        self.res.move(b)
        t_live, _ = self.res.wait_live(b)
        (p2, b2, _), t_prot = self.res.wait_protected(
            [p, b], min_gen=gen, timeout=120)
        self.assertEqual((p2, b2), (b, p))
        self.roles_are(b, p)
        self.assertIn('planned switch-over', self.res.agent_log(b))
        self.res.clear()
        self.finish(b, {'move to live s': t_live - t0,
                        'move to protected s': t_prot - t0})


class AgentTest(FTTestCase):
    """The agent alone, with no cluster: ocf-tester, and the lock that a
    VM started alone takes."""

    def params(self):
        append = f'{FAST_BOOT} ft.work=ticker'
        wd = self.scratch('agent')
        os.mkdir(wd)
        # no NIC here: a tap needs a bridge; and no attribute daemon to
        # keep fence_writes' node attribute in
        return dict(guest_params(_OneNode(), wd, QEMU_BIN, GUEST_DIR,
                                 FIRMWARE_DIRS, append, BridgeNet.MAC, UUID,
                                 nic=False), fence_writes='false')

    def test_ocf_tester(self):
        """ocf-tester (resource-agents) runs every action of the agent,
        as Pacemaker would, on this host: a joiner, then a first boot
        alone, demote, promote, stop."""
        if not shutil.which('ocf-tester'):
            self.skipTest('needs ocf-tester (scripts/install-deps.sh)')
        p = self.params()
        opts = [a for k, v in dict(p, addresses=f'{os.uname().nodename}='
                                   '127.0.0.1',
                                   state_dir=self.state('state')).items()
                for a in ('-o', f'{k}={v}')]
        r = subprocess.run(['ocf-tester', '-n', 'ftvm', *opts, AGENT],
                           capture_output=True, text=True, timeout=300)
        self.log.info('ocf-tester: %s', r.stdout)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn('passed all tests', r.stdout)

    def state(self, name):
        """A state directory for the agent in /tmp, so that the QMP
        sockets in it stay under the 108 bytes of a UNIX socket path
        wherever the tree is; linked from the work directory, and
        removed only if the test passed."""
        d = tempfile.mkdtemp(prefix=f'ft-{name}.', dir='/tmp')
        os.symlink(d, self.scratch(name))
        self.addCleanup(lambda: self._ft_passed and
                        shutil.rmtree(d, ignore_errors=True))
        return d

    def agent(self, action, params, node, **meta):
        env = dict(os.environ, OCF_ROOT='/usr/lib/ocf',
                   OCF_RESOURCE_INSTANCE='ftvm:0',
                   OCF_RESKEY_CRM_meta_on_node=node,
                   **{f'OCF_RESKEY_{k}': str(v) for k, v in params.items()},
                   **{f'OCF_RESKEY_CRM_meta_{k}': v for k, v in meta.items()})
        return subprocess.run([AGENT, action], env=env, capture_output=True,
                              text=True, timeout=200).returncode

    def test_long_state_dir_refused(self):
        """A state_dir too long for the QMP sockets in it is a
        configuration error (OCF_ERR_CONFIGURED), not a QEMU that dies
        at start."""
        p = self.params()
        p.update(addresses=f'{os.uname().nodename}=127.0.0.1')
        self.assertEqual(self.agent('validate-all', dict(
            p, state_dir=self.state('state')), os.uname().nodename), 0)
        self.assertEqual(self.agent('validate-all', dict(
            p, state_dir='/tmp/' + 'd' * 100), os.uname().nodename), 6)

    def test_tls(self):
        """tls_dir: the agent's joiner and the live VM that attaches it
        (first boot, then the post-start notification) under x509 TLS
        with client certificates, for the log and the state; two nodes of
        this host (127.0.0.1 and 127.0.0.2), with no cluster."""
        pki = make_pki(self.scratch('pki'))
        tls = self.scratch('tls')
        os.mkdir(tls, 0o700)
        for d, f in (('backup', 'ca-cert.pem'), ('backup', 'server-cert.pem'),
                     ('backup', 'server-key.pem'),
                     ('primary', 'client-cert.pem'),
                     ('primary', 'client-key.pem')):
            shutil.copy(os.path.join(pki, d, f), tls)
        p = self.params()
        p.update(addresses='a=127.0.0.1 b=127.0.0.2', tls_dir=tls,
                 tls_hostname='localhost', rr_options='rrtimeout=1000')
        pa = dict(p, state_dir=self.state('state-a'))
        pb = dict(p, state_dir=self.state('state-b'))
        try:
            for params, node in ((pb, 'b'), (pa, 'a')):
                self.assertEqual(self.agent('start', params, node), 0)
            self.assertEqual(self.agent('promote', pa, 'a'), 0)
            self.assertEqual(self.agent(
                'notify', pa, 'a', notify_type='post',
                notify_operation='start', notify_start_uname='b'), 0)
            self.assertEqual(self.agent('monitor', pa, 'a'), 8)
            self.assertEqual(self.agent('monitor', pb, 'b'), 0)
            sock = os.path.join(pb['state_dir'], 'ftvm', 'ftvm.qmp')
            vm = Qmp('b', sock)
            try:
                ft = vm.ft()
            finally:
                vm.close()
            self.assertEqual((ft['role'], ft['state'], ft['protected']),
                             ('backup', 'streaming', True))
            with open(os.path.join(pa['state_dir'], 'ftvm',
                                   'qemu.log')) as f:
                log = f.read()
            self.assertIn('protected again, generation 2', log)
            self.assertNotIn('neither encrypted', log)
        finally:
            for params, node in ((pa, 'a'), (pb, 'b')):
                self.agent('stop', params, node)

    def test_unjoined_joiner_waits_again(self):
        """A primary connects the joiner's logging channel, then its
        migration fails (here: a port nothing listens on; in a cluster, a
        joiner just started whose migrate-incoming is not there yet): the
        joiner's stream ends before it received anything.  Its monitor
        starts it again as a joiner and reports it running, never failed,
        and the next attach protects the VM."""
        p = self.params()
        p.update(addresses='a=127.0.0.1 b=127.0.0.2', port=free_tcp_port(),
                 migration_port=free_tcp_port(),
                 rr_options='rrtimeout=1000,rrinsecure=on')
        pa = dict(p, state_dir=self.state('state-a'))
        pb = dict(p, state_dir=self.state('state-b'))

        def ft(params):
            vm = Qmp('x', os.path.join(params['state_dir'], 'ftvm',
                                       'ftvm.qmp'))
            try:
                return vm.ft()
            finally:
                vm.close()
        try:
            for params, node in ((pb, 'b'), (pa, 'a')):
                self.assertEqual(self.agent('start', params, node), 0)
            self.assertEqual(self.agent('promote', pa, 'a'), 0)
            vm = Qmp('a', os.path.join(pa['state_dir'], 'ftvm', 'ftvm.qmp'))
            try:
                vm.cmd('x-ft-protect', address={
                    'type': 'inet', 'host': '127.0.0.2',
                    'port': str(p['port'])},
                    uri=f'tcp:127.0.0.2:{free_tcp_port()}')
                ev = vm.event(('FT_PROTECT_FAILED',), 60)
                self.assertIsNotNone(ev)
                self.assertIn('refused', ev['data']['reason'])
            finally:
                vm.close()
            deadline = time.monotonic() + 30
            while ft(pb)['state'] == 'waiting':
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.1)
            self.assertEqual(ft(pb)['icount'], 0)
            self.assertEqual(self.agent('monitor', pb, 'b'), 0)
            self.assertEqual((ft(pb)['role'], ft(pb)['state']),
                             ('backup', 'waiting'))
            self.assertEqual(self.agent(
                'notify', pa, 'a', notify_type='post',
                notify_operation='start', notify_start_uname='b'), 0)
            self.assertEqual((ft(pb)['state'], ft(pb)['protected']),
                             ('streaming', True))
            with open(os.path.join(pb['state_dir'], 'ftvm',
                                   'agent.log')) as f:
                self.assertIn('ended before it joined', f.read())
        finally:
            for params, node in ((pa, 'a'), (pb, 'b')):
                self.agent('stop', params, node)

    def test_alone_takes_the_lock(self):
        """Two VMs of one -uuid started alone (rralone=on) in one
        generation: the second finds the lock taken and does not start;
        one started in a generation older than a record does not either."""
        lock = self.scratch('lock')
        os.mkdir(lock, 0o700)
        append = f'{FAST_BOOT} ft.work=ticker'
        vms = []
        for name, gen in (('first', 2), ('second', 2), ('older', 1)):
            vm, _ = self.make_vm(name, append, rr='record',
                                 icount_extra=f',rralone=on,rrlock={lock},'
                                 f'rrgen={gen}', args=['-uuid', UUID])
            vms.append(vm)
        vms[0].launch()
        for vm, why in ((vms[1], 'generation 2 of this VM was already '
                         'decided (the lock is held by primary'),
                        (vms[2], 'cannot start alone in generation 1')):
            vm.set_qmp_monitor(enabled=False)
            vm.launch()
            self.assertEqual(wait_exit(vm, 60), 1)
            self.assertIn(why, self.log_text(vm))
        self.assertEqual(vms[0].cmd('x-query-ft')['state'], 'live')


class _OneNode:
    """guest_params()'s view of a cluster of this host alone."""
    names = [os.uname().nodename]

    @staticmethod
    def node_ip(node):
        return '127.0.0.1'


if __name__ == '__main__':
    import unittest
    unittest.main()

# The fault-tolerant VM as a Pacemaker resource (ocf:qemu-ft:vm, a
# promotable clone), on a cluster of scripts/ftcluster.py: its definition,
# where its instances run, and what their QEMUs say.  For the cluster
# tests and scripts/ft-cluster-demo.py; on real hosts the same
# definition is loaded with cibadmin (docs/cluster.md).
#
# SPDX-License-Identifier: GPL-2.0-or-later

import glob
import logging
import os
import re
import shlex
import sys
import threading
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'qemu', 'python'))
from ftmgmt import Qmp  # noqa: E402

AGENT = os.path.join(HERE, 'ocf', 'vm')
STATE_DIR = '/run/qemu-ft'

# Operation timeouts and intervals (docs/cluster.md explains them).  The
# promoted instance's monitor finds a dead primary; its backup has gone
# live by itself by then (rrtimeout), so this only paces the new backup.
OPS = (
    ('start', '0s', '60s', None),
    ('stop', '0s', '30s', None),
    ('promote', '0s', '60s', None),
    ('demote', '0s', '30s', None),
    ('notify', '0s', '150s', None),
    ('monitor', '1s', '20s', 'Promoted'),
    ('monitor', '2s', '20s', 'Unpromoted'),
)


def vm_config(path, *args):
    """Write the agent's vm_config file: QEMU arguments, one a line."""
    with open(path, 'w') as f:
        f.write('# QEMU arguments of the fault-tolerant VM '
                '(ocf:qemu-ft:vm vm_config)\n')
        for a in args:
            f.write(shlex.quote(a) + '\n')
    return path


def guest_params(cluster, workdir, qemu, guest_dir, firmware_dirs, append,
                 mac, uuid, rr_options='rrtimeout=1000,rrinsecure=on',
                 nic=True, disk=None, disk_opts=''):
    """The agent's parameters for the test guest on @cluster: its
    vm_config (written in @workdir, with a lock directory there), with
    @nic its NIC on each node's tap fttap0 under the output rule, with
    @disk (a raw image path) a shared AHCI disk through blkreplay ft=on
    (opened without QEMU's image lock on every node: a backup that goes
    live keeps the open it had), with @disk_opts on its device (werror=,
    rerror=), its console in @workdir/console-NODE-START.log."""
    nic_args = ['-netdev', 'tap,id=n0,ifname=fttap0,script=no,'
                'downscript=no,vhost=off',
                '-device', f'virtio-net-pci,netdev=n0,mac={mac},romfile=',
                '-object', 'filter-replay,id=fr0,netdev=n0',
                '-object', 'filter-ft-output,id=fo0,netdev=n0']
    lock = os.path.join(workdir, 'lock')
    os.makedirs(lock, 0o700, exist_ok=True)
    config = vm_config(
        os.path.join(workdir, 'vm.args'),
        '-machine', 'q35', '-cpu', 'Nehalem', '-smp', '1', '-m', '256',
        '-nodefaults', '-kernel', os.path.join(guest_dir, 'vmlinux'),
        '-initrd', os.path.join(guest_dir, 'initramfs.cpio.gz'),
        '-append', append,
        '-chardev', f'file,id=ser0,path={workdir}/console-{{node}}'
        '-{start}.log,ft-hold=on', '-serial', 'chardev:ser0',
        *(nic_args if nic else []),
        *(['-drive', f'file={disk},if=none,id=d0,format=raw,'
           'cache.direct=on,file.locking=off',
           '-drive', 'driver=blkreplay,if=none,image=d0,id=d0-rr,ft=on',
           '-device', f'ide-hd,drive=d0-rr{disk_opts}'] if disk else []),
        *[a for d in firmware_dirs for a in ('-L', d)])
    return {'qemu': qemu, 'vm_config': config, 'uuid': uuid,
            'lockdir': lock,
            'addresses': ' '.join(f'{n}={cluster.node_ip(n)}'
                                  for n in cluster.names),
            'rr_options': rr_options}


def consoles(workdir):
    """The console files of guest_params() that have output, in the order
    their VMs went live: the one that booted, then by their first tick
    (a backup writes nothing until it goes live: ft-hold=on)."""
    def key(f):
        with open(f, 'rb') as fh:
            text = fh.read().decode('utf-8', 'replace')
        first = re.search(r'^TICK (\d+)\r?$', text, re.M)
        return (0 if 'FT-BOOT' in text else 1,
                int(first.group(1)) if first else 1 << 30, f)
    files = [f for f in glob.glob(os.path.join(workdir, 'console-*.log'))
             if os.path.getsize(f)]
    return sorted(files, key=key)


def resource_xml(name, params, migration_threshold=1):
    """The CIB <clone> of the VM: a promotable clone of two instances."""
    clone = ET.Element('clone', id=f'{name}-clone')
    m = ET.SubElement(clone, 'meta_attributes', id=f'{name}-clone-meta')
    for k, v in (('promotable', 'true'), ('promoted-max', '1'),
                 ('promoted-node-max', '1'), ('clone-max', '2'),
                 ('clone-node-max', '1'), ('notify', 'true'),
                 ('interleave', 'true')):
        ET.SubElement(m, 'nvpair', id=f'{name}-clone-{k}', name=k, value=v)
    prim = ET.SubElement(clone, 'primitive', id=name, attrib={
        'class': 'ocf', 'provider': 'qemu-ft', 'type': 'vm'})
    ia = ET.SubElement(prim, 'instance_attributes', id=f'{name}-params')
    for k, v in params.items():
        ET.SubElement(ia, 'nvpair', id=f'{name}-{k}', name=k, value=str(v))
    ma = ET.SubElement(prim, 'meta_attributes', id=f'{name}-meta')
    # A node where the VM failed gets no instance again until a cleanup:
    # the new backup goes to another node.
    ET.SubElement(ma, 'nvpair', id=f'{name}-migration-threshold',
                  name='migration-threshold', value=str(migration_threshold))
    ops = ET.SubElement(prim, 'operations')
    for op, interval, timeout, role in OPS:
        attrs = {'id': f'{name}-{op}-{interval}', 'name': op,
                 'interval': interval, 'timeout': timeout}
        if role:
            attrs['role'] = role
        ET.SubElement(ops, 'op', attrs)
    return ET.tostring(clone, encoding='unicode')


class FtResource:
    """The VM resource @name on @cluster (an ftcluster.Cluster)."""

    def __init__(self, cluster, name='ftvm'):
        self.cl, self.name = cluster, name
        # query() polls nodes with no QEMU: qemu.qmp logs each refused
        # connection as an error
        for n in cluster.names:
            logging.getLogger(f'qemu.qmp.qmp_client.{n}').setLevel(
                logging.CRITICAL)

    def create(self, params):
        self.cl.cib('--create', '--scope', 'resources', '--xml-text',
                    resource_xml(self.name, params))

    def roles(self):
        """{node: 'Promoted'|'Unpromoted'|'Started'|...} of the instances
        Pacemaker sees, and the failed ones as 'FAILED'."""
        out = {}
        root = self.cl.status_xml()
        for res in root.iter('resource'):
            if res.get('id', '').split(':')[0] != self.name:
                continue
            role = 'FAILED' if res.get('failed') == 'true' else \
                res.get('role')
            for node in res.iter('node'):
                out[node.get('name')] = role
        return out

    def move(self, node):
        """A planned move of the promoted instance to @node."""
        return self.cl.run(self.cl.any_node(), 'crm_resource', '--move',
                           '--promoted', '-r', f'{self.name}-clone',
                           '-N', node)

    def clear(self):
        self.cl.run(self.cl.any_node(), 'crm_resource', '--clear', '-r',
                    f'{self.name}-clone')

    def cleanup(self):
        self.cl.run(self.cl.any_node(), 'crm_resource', '--cleanup', '-r',
                    f'{self.name}-clone')

    def path(self, node, name):
        """A file of @node's instance, as seen from here (the node's
        /run is its own: through its anchor's root)."""
        return f'/proc/{self.cl.anchor_pid(node)}/root{STATE_DIR}/' \
            f'{self.name}/{name}'

    def qmp(self, node):
        return self.path(node, f'{self.name}.qmp')

    def qemu_pid(self, node):
        try:
            with open(self.path(node, 'qemu.pid')) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def ask(self, node, what, timeout=3.0):
        """@what(its Qmp) of @node's QEMU, None if it has none or is
        gone."""
        try:
            vm = Qmp(node, self.qmp(node))
        except Exception:   # noqa: BLE001  no QEMU there
            return None
        try:
            vm.mon.settimeout(timeout)
            return what(vm)
        except Exception:   # noqa: BLE001  gone meanwhile
            return None
        finally:
            vm.close()

    def query(self, node, timeout=3.0):
        """x-query-ft of @node's QEMU, None if it has none or is gone."""
        return self.ask(node, lambda vm: vm.ft(), timeout)

    def runstate(self, node, timeout=3.0):
        """query-status of @node's QEMU, None if it has none or is gone."""
        return self.ask(node, lambda vm: vm.cmd('query-status')['status'],
                        timeout)

    def states(self, nodes):
        return {n: self.query(n) for n in nodes}

    def protected(self, nodes, min_gen=0):
        """(live node, backup node, generation) when a live primary and
        a backup in one generation > @min_gen passed their first check;
        else None."""
        st = self.states(nodes)
        for p, pi in st.items():
            if not pi or pi.get('role') != 'primary' or \
                    pi['state'] != 'streaming' or \
                    pi['generation'] <= min_gen:
                continue
            for b, bi in st.items():
                if bi and b != p and bi.get('role') == 'backup' and \
                        bi['state'] == 'streaming' and bi['protected'] and \
                        bi['generation'] == pi['generation']:
                    return p, b, pi['generation']
        return None

    def wait_protected(self, nodes, min_gen=0, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.protected(nodes, min_gen)
            if got:
                return got, time.time()
            time.sleep(0.2)
        raise TimeoutError(f'{self.name}: not protected in a generation > '
                           f'{min_gen} after {timeout} s: '
                           f'{self.states(nodes)}; Pacemaker: '
                           f'{self.cl.status()}')

    def wait_live(self, node, timeout=60):
        """The time @node's VM reported state live."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            i = self.query(node, 1.0)
            if i and i['state'] == 'live':
                return time.time(), i
            time.sleep(0.02)
        raise TimeoutError(f'{node}: the VM did not go live: '
                           f'{self.query(node)}')

    def agent_log(self, node):
        try:
            with open(self.path(node, 'agent.log')) as f:
                return f.read()
        except OSError:
            return ''


class LiveWatch(threading.Thread):
    """Samples every node's QEMU while it runs: two VMs live at one time
    would be split brain.  .double is the first such sample, or None."""

    def __init__(self, res, nodes, period=0.25):
        super().__init__(daemon=True)
        self.res, self.nodes, self.period = res, nodes, period
        self.double, self.samples = None, 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            live = [n for n, i in self.res.states(self.nodes).items()
                    if i and i['state'] == 'live']
            self.samples += 1
            if len(live) > 1 and self.double is None:
                self.double = (time.time(), live)
            self.halt.wait(self.period)

    def stop(self):
        self.halt.set()
        self.join(10)

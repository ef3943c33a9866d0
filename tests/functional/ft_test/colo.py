# QEMU's own COLO (COarse-grained LOck-stepping) pair of the test guest,
# for the side-by-side benchmark (tests/bench/bench_colo.py): the set-up
# of QEMU's docs/COLO-FT.txt on one host, on a BridgeNet, without a disk.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import re
import shutil
import signal
import subprocess
import time

from .config import BUILD, QEMU_IMG
from .net import free_tcp_port
from .utils import sha256_file
from .vm import kill

# A QEMU built with COLO (scripts/build-qemu.sh --colo); ours leaves it out.
COLO_QEMU = os.environ.get('FT_COLO_QEMU', os.path.join(
    BUILD, 'qemu-colo', 'qemu-system-x86_64'))


class ColoPair:
    """A COLO primary and secondary of the guest (kernel command line
    @append) in @workdir (a vm.Workdir), on @net's taps 0 and 1 (a
    BridgeNet), with the same MAC.  The NIC is virtio-net on a tap, whose
    packets carry a virtio-net header: every COLO object is told so
    (vnet_hdr_support=on), or colo-compare could not parse a packet and
    would let each out uncompared.

    The primary mirrors what the client sends to the secondary
    (filter-mirror); colo-compare lets a packet of the primary out only
    once the secondary sent the same one, or its timeout passed; a
    difference starts a checkpoint.  Both run on plain TCG (COLO needs
    no -icount).  @machine: pc or q35.  @checkpoint_ms: the periodic
    checkpoint (x-checkpoint-delay; QEMU's default is 20 s).
    @compare_timeout_ms: colo-compare's hold (QEMU's default is 3000 ms).

    @disk (a raw image) gives the guest an AHCI disk replicated as
    docs/COLO-FT.txt sets it up: on the primary a quorum whose second
    child, added at start(), is the replication driver writing through
    NBD to the secondary; on the secondary a copy of the image (each
    side has its own, as on two hosts) under the replication driver's
    active and hidden qcow2 overlays, exported by its NBD server.  Both
    sides open their images with O_DIRECT, as our pair does.
    """

    def __init__(self, append, net, workdir, machine='pc', memory=256,
                 checkpoint_ms=None, compare_timeout_ms=None,
                 qemu=COLO_QEMU, disk=None):
        if not os.path.exists(qemu):
            raise FileNotFoundError(
                f'{qemu}: no COLO build; run scripts/build-qemu.sh --colo')
        self.checkpoint_ms = checkpoint_ms
        port = {k: free_tcp_port() for k in
                ('mirror', 'sec_out', 'pri_out', 'out', 'mig', 'nbd')}
        self.mig_port = port['mig']
        self.nbd_port = port['nbd'] if disk else None
        lo = 'host=127.0.0.1,port='
        nic = net.nic_args(0, filters=False)
        compare = ('colo-compare,id=comp0,primary_in=compare0-0,'
                   'secondary_in=compare1,outdev=compare_out0,'
                   'iothread=iothread1,vnet_hdr_support=on')
        if compare_timeout_ms:
            compare += f',compare_timeout={compare_timeout_ms}'
        primary_args = nic + [
            # to the secondary: what the client sends (mirror0); from it:
            # what its guest sends (compare1)
            '-chardev', f'socket,id=mirror0,{lo}{port["mirror"]},'
            'server=on,wait=off',
            '-chardev', f'socket,id=compare1,{lo}{port["sec_out"]},'
            'server=on,wait=off',
            # the primary's own output to colo-compare, and back out
            '-chardev', f'socket,id=compare0,{lo}{port["pri_out"]},'
            'server=on,wait=off',
            '-chardev', f'socket,id=compare0-0,{lo}{port["pri_out"]}',
            '-chardev', f'socket,id=compare_out,{lo}{port["out"]},'
            'server=on,wait=off',
            '-chardev', f'socket,id=compare_out0,{lo}{port["out"]}',
            '-object', 'filter-mirror,id=m0,netdev=n0,queue=tx,'
            'outdev=mirror0,vnet_hdr_support=on',
            '-object', 'filter-redirector,id=redire0,netdev=n0,queue=rx,'
            'indev=compare_out,vnet_hdr_support=on',
            '-object', 'filter-redirector,id=redire1,netdev=n0,queue=rx,'
            'outdev=compare0,vnet_hdr_support=on',
            '-object', 'iothread,id=iothread1',
            '-object', compare,
            # its checkpoints, counted and timed by checkpoints() and
            # pauses_ms()
            '-trace', 'enable=colo_vm_state_change,'
            f'file={workdir.scratch("colo-trace.log")}',
            '-msg', 'timestamp=on',
            '-S']
        self.trace = workdir.scratch('colo-trace.log')
        secondary_args = net.nic_args(1, filters=False) + [
            '-chardev', f'socket,id=red0,{lo}{port["mirror"]},'
            'reconnect-ms=1000',
            '-chardev', f'socket,id=red1,{lo}{port["sec_out"]},'
            'reconnect-ms=1000',
            '-object', 'filter-redirector,id=f1,netdev=n0,queue=tx,'
            'indev=red0,vnet_hdr_support=on',
            '-object', 'filter-redirector,id=f2,netdev=n0,queue=rx,'
            'outdev=red1,vnet_hdr_support=on',
            '-object', 'filter-rewriter,id=rew0,netdev=n0,queue=all,'
            'vnet_hdr_support=on',
            '-incoming', f'tcp:127.0.0.1:{port["mig"]}']
        self.disk, self.disk_copy = disk, None
        if disk:
            self.disk_copy = workdir.scratch('colo-secondary.img')
            p_disk, s_disk = self.disk_args(disk, self.disk_copy, workdir)
            primary_args += p_disk
            secondary_args += s_disk
        self.primary, self.pcon = workdir.make_vm(
            'colo-primary', append, shift=None, qemu=qemu, machine=machine,
            memory=memory, args=primary_args)
        self.secondary, self.scon = workdir.make_vm(
            'colo-secondary', append, shift=None, qemu=qemu,
            machine=machine, memory=memory, args=secondary_args)

    @staticmethod
    def disk_args(disk, copy, workdir):
        """The primary's and the secondary's drive options for @disk,
        the secondary's on its own @copy of it."""
        shutil.copyfile(disk, copy)
        size = str(os.path.getsize(disk))
        overlay = {}
        for name in ('active', 'hidden'):
            overlay[name] = workdir.scratch(f'colo-{name}.qcow2')
            subprocess.run([QEMU_IMG, 'create', '-q', '-f', 'qcow2',
                            overlay[name], size], check=True)
        dev = ['-device', 'ide-hd,drive=colo-disk0']
        primary = ['-drive', 'if=none,id=colo-disk0,driver=quorum,'
                   'read-pattern=fifo,vote-threshold=1,'
                   f'children.0.file.filename={disk},children.0.driver=raw,'
                   'children.0.cache.direct=on'] + dev
        secondary = [
            '-drive', f'if=none,id=parent0,file.filename={copy},'
            'driver=raw,cache.direct=on',
            '-drive', 'if=none,id=childs0,driver=replication,mode=secondary,'
            'top-id=colo-disk0,file.driver=qcow2,'
            f'file.file.filename={overlay["active"]},'
            'file.backing.driver=qcow2,'
            f'file.backing.file.filename={overlay["hidden"]},'
            'file.backing.backing=parent0',
            '-drive', 'if=none,id=colo-disk0,driver=quorum,'
            'read-pattern=fifo,vote-threshold=1,children.0=childs0'] + dev
        return primary, secondary

    def __iter__(self):
        return iter((self.primary, self.pcon, self.secondary, self.scon))

    def start(self, timeout=60):
        """Launch both, and send the (not yet started) primary to the
        secondary with x-colo: both run once migration reaches the colo
        state.  Raises with the state reached if it does not."""
        self.primary.launch()
        self.secondary.launch()
        caps = [{'capability': 'x-colo', 'state': True}]
        self.secondary.cmd('migrate-set-capabilities', capabilities=caps)
        if self.nbd_port:
            # The secondary exports its disk; the primary's quorum gets
            # the replication child that writes to it (COLO-FT.txt's order)
            self.secondary.cmd('nbd-server-start', addr={
                'type': 'inet', 'data': {'host': '127.0.0.1',
                                         'port': str(self.nbd_port)}})
            self.secondary.cmd('nbd-server-add', device='parent0',
                               writable=True)
            self.primary.cmd(
                'human-monitor-command', **{'command-line':
                    'drive_add -n buddy driver=replication,mode=primary,'
                    'file.driver=nbd,file.host=127.0.0.1,'
                    f'file.port={self.nbd_port},file.export=parent0,'
                    'node-name=replication0'})
            self.primary.cmd('x-blockdev-change', parent='colo-disk0',
                             node='replication0')
        self.primary.cmd('migrate-set-capabilities', capabilities=caps)
        if self.checkpoint_ms:
            self.primary.cmd('migrate-set-parameters',
                             **{'x-checkpoint-delay': self.checkpoint_ms})
        self.primary.cmd('migrate', uri=f'tcp:127.0.0.1:{self.mig_port}')
        deadline = time.monotonic() + timeout
        while True:
            st = self.primary.cmd('query-migrate').get('status')
            if st == 'colo':
                return self
            if st in ('failed', 'cancelled') or \
                    time.monotonic() > deadline:
                raise AssertionError(f'COLO migration {st}: '
                                     f'{self.primary.cmd("query-migrate")}')
            time.sleep(0.1)

    def checkpoints(self):
        """How many checkpoints the primary has begun."""
        try:
            with open(self.trace) as f:
                return sum(1 for ln in f if "'run' => 'stop'" in ln)
        except FileNotFoundError:
            return 0

    def pauses_ms(self):
        """How long the primary stood still at each checkpoint so far
        (its vCPU stopped to running again), ms."""
        out, stopped = [], None
        try:
            with open(self.trace) as f:
                for ln in f:
                    m = re.match(r"\d+@(\d+\.\d+):colo_vm_state_change "
                                 r"Change '(\w+)' => '(\w+)'", ln)
                    if not m:
                        continue
                    t = float(m.group(1))
                    if m.group(3) == 'stop':
                        stopped = t
                    elif stopped is not None:
                        out.append((t - stopped) * 1000)
                        stopped = None
        except FileNotFoundError:
            pass
        return out

    def disk_replicated(self):
        """Whether the secondary's copy of the disk holds what the
        primary's does (call it with the guest's writes done)."""
        return sha256_file(self.disk) == sha256_file(self.disk_copy)

    def status(self):
        """query-colo-status of both sides."""
        return (self.primary.cmd('query-colo-status'),
                self.secondary.cmd('query-colo-status'))

    def kill_primary_and_fail_over(self):
        """kill -9 of the primary, then the secondary's failover as
        QEMU's docs give it, issued at once (COLO has no heartbeat: the
        detection an outside agent would add is not counted).  Returns
        (kill time, time the secondary is live), wall seconds: live is
        out of COLO (query-colo-status mode none) with its NIC on its
        own tap again."""
        t_kill = time.time()
        os.kill(self.primary.get_pid(), signal.SIGKILL)
        self.secondary.cmd('x-colo-lost-heartbeat')
        deadline = time.monotonic() + 30
        while self.secondary.cmd('query-colo-status')['mode'] != 'none':
            if time.monotonic() > deadline:
                raise AssertionError('secondary: still in COLO 30 s after '
                                     'x-colo-lost-heartbeat')
            time.sleep(0.001)
        # Its NIC on its own tap again, as the docs' failover does
        for obj in ('f2', 'f1'):
            self.secondary.cmd('object-del', id=obj)
        for chardev in ('red1', 'red0'):
            self.secondary.cmd('chardev-remove', id=chardev)
        return t_kill, time.time()

    def stop(self):
        for vm in (self.primary, self.secondary):
            kill(vm)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_):
        self.stop()

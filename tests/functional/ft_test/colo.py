# QEMU's own COLO (COarse-grained LOck-stepping) pair of the test guest,
# for the side-by-side benchmark (tests/bench/bench_colo.py): the set-up
# of QEMU's docs/COLO-FT.txt on one host, on a BridgeNet, without a disk.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import re
import signal
import time

from .config import BUILD
from .net import free_tcp_port
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
    """

    def __init__(self, append, net, workdir, machine='pc', memory=256,
                 checkpoint_ms=None, compare_timeout_ms=None,
                 qemu=COLO_QEMU):
        if not os.path.exists(qemu):
            raise FileNotFoundError(
                f'{qemu}: no COLO build; run scripts/build-qemu.sh --colo')
        self.checkpoint_ms = checkpoint_ms
        port = {k: free_tcp_port() for k in
                ('mirror', 'sec_out', 'pri_out', 'out', 'mig')}
        self.mig_port = port['mig']
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
        self.primary, self.pcon = workdir.make_vm(
            'colo-primary', append, shift=None, qemu=qemu, machine=machine,
            memory=memory, args=primary_args)
        self.secondary, self.scon = workdir.make_vm(
            'colo-secondary', append, shift=None, qemu=qemu,
            machine=machine, memory=memory, args=secondary_args)

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

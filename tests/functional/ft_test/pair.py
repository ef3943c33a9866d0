# A fault-tolerant pair: a primary recording to a backup that replays it
# live, built, started and always torn down.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import threading
import uuid

from . import tls as ft_tls
from .net import free_tcp_port, wait_port
from .vm import Workdir, kill


class Pair:
    """A primary recording to a backup that replays it live.

    The log goes over TCP on 127.0.0.1; by default the backup is the
    server and waits for the primary.  @protected makes it a pair that
    fails over: a shared lock directory (@lock, by default one in the
    work directory), the same -uuid on both sides, and the backup's
    console held while it replays.  Otherwise (unless @backup_hold) the
    backup's console shows what it replays (ft-hold=off), so that it can
    be compared with the primary's.  @tls is None, 'x509' (client
    certificates, and the server admits only the client's name) or
    'psk'.  @host is the server's address, or (primary's, backup's);
    @client_host is where the client connects, if not there, and
    @client_port (a proxy's, say) if not to the server's port.
    @server_netns is the network namespace the server listens in.
    @qemu is another qemu-system-x86_64 for both (such as an older build);
    @shift, their -icount shift (a number or auto); @smp, their vCPUs.

    The VMs are made in @workdir (a vm.Workdir), by default one of the
    pair's own.  As a context manager, the pair starts on entry, and on
    exit its VMs are killed and its own work directory removed (kept if
    the block failed).  It unpacks as (primary, pcon, backup, bcon).
    """

    def __init__(self, append, workdir=None, protected=False, lock=None,
                 backup_append=None, primary_args=(), backup_args=(),
                 rrx='', primary_server=False, memory=256,
                 backup_memory=None, client_port=None, backup_hold=None,
                 host='127.0.0.1', primary_wrapper=(), backup_wrapper=(),
                 tls=None, client_host=None, server_netns=None,
                 qemu=None, shift=5, smp=1):
        self.own_workdir = workdir is None
        self.workdir = workdir or Workdir('pair')
        self.primary_server = primary_server
        self.server_netns = server_netns
        self.port = free_tcp_port()
        primary_args, backup_args = list(primary_args), list(backup_args)
        if smp != 1:
            primary_args += ['-smp', str(smp)]
            backup_args += ['-smp', str(smp)]
        if protected:
            self.lock_dir = lock or self.workdir.scratch('lock')
            os.makedirs(self.lock_dir, exist_ok=True)
            self.vm_uuid = str(uuid.uuid4())
            ids = ['-uuid', self.vm_uuid]
            primary_args, backup_args = ids + primary_args, ids + backup_args
            rrx = f',rrlock={self.lock_dir}' + rrx
        if backup_hold is None:
            backup_hold = protected
        if isinstance(host, tuple):     # (primary's address, backup's)
            srv_host = host[0] if primary_server else host[1]
        else:
            srv_host = host
        server = f'socket,id=ftlog,host={srv_host},port={self.port},' \
                 'server=on,wait=on'
        client = f'socket,id=ftlog,host={client_host or srv_host},' \
                 f'port={client_port or self.port}'
        if tls:
            p_tls, b_tls = ft_tls.pair_args(tls, primary_server)
            primary_args = p_tls + primary_args
            backup_args = b_tls + backup_args
            server += ft_tls.chardev_opts(tls, server=True)
            client += ft_tls.chardev_opts(tls, server=False)
        self.primary, self.pcon = self.workdir.make_vm(
            'primary', append, rr='record', memory=memory, shift=shift,
            wrapper=primary_wrapper, icount_extra=',rrchardev=ftlog' + rrx,
            qemu=qemu,
            args=['-chardev', server if primary_server else client,
                  *primary_args])
        self.backup, self.bcon = self.workdir.make_vm(
            'backup', append if backup_append is None else backup_append,
            rr='replay', memory=backup_memory or memory, shift=shift,
            wrapper=backup_wrapper, icount_extra=',rrchardev=ftlog' + rrx,
            hold=backup_hold, qemu=qemu,
            args=['-chardev', client if primary_server else server,
                  *backup_args])

    def __iter__(self):
        return iter((self.primary, self.pcon, self.backup, self.bcon))

    def lock_path(self, gen=1):
        """A protected pair's lock record of generation @gen."""
        return os.path.join(self.lock_dir, f'ft-{self.vm_uuid}.{gen}.lock')

    def start(self):
        """Launch both; the server side blocks until the client comes."""
        first, second = (self.primary, self.backup) if self.primary_server \
            else (self.backup, self.primary)
        err = []

        def run():
            try:
                first.launch()
            except Exception as e:  # noqa: BLE001  re-raised below
                err.append(e)
        t = threading.Thread(target=run)
        t.start()
        wait_port(self.port, 30, self.server_netns)
        second.launch()
        t.join(60)
        if err:
            raise err[0]
        return self

    def stop(self, failed=False):
        """Kill both VMs; remove the pair's own work directory unless
        @failed."""
        for vm in (self.primary, self.backup):
            kill(vm)
        if self.own_workdir:
            self.workdir.close(keep=failed)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop(failed=True)
            raise

    def __exit__(self, exc_type, *_):
        self.stop(failed=exc_type is not None)

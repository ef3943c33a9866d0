# Restoring redundancy: a backup that joins a running VM (rrjoin=on,
# -incoming), and x-ft-protect, which gives the VM that backup.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import time

from .net import free_tcp_port


def start_joiner(workdir, name, append, lock_dir, vm_uuid, args=(),
                 memory=256, host='127.0.0.1', icount_extra='', wrapper=()):
    """Launch, in @workdir (a vm.Workdir), a backup that waits to join a
    running VM of -uuid @vm_uuid: its logging channel on a port of its
    own, its state by -incoming on another, both on @host; @wrapper runs
    it (in a network namespace, say).  Returns (vm, console, port,
    migration port)."""
    port, mig = free_tcp_port(), free_tcp_port()
    lock = f',rrlock={lock_dir}' if lock_dir else ''
    vm, con = workdir.make_vm(
        name, append, rr='replay', hold=True, memory=memory, wrapper=wrapper,
        icount_extra=f',rrchardev=ftlog,rrjoin=on{lock}{icount_extra}',
        args=['-uuid', vm_uuid,
              '-chardev', f'socket,id=ftlog,host={host},port={port},'
              'server=on,wait=off',
              '-incoming', f'tcp:{host}:{mig}', *args])
    vm.launch()
    return vm, con, port, mig


def protect_cmd(live, port, mig, host='127.0.0.1', **args):
    """Issue x-ft-protect on @live towards a joiner, with @args (such as
    max-pause-ms) besides the addresses; returns the new generation."""
    gen = live.cmd('x-query-ft')['generation'] + 1
    live.cmd('x-ft-protect',
             address={'type': 'inet', 'host': host, 'port': str(port)},
             uri=f'tcp:{host}:{mig}', **args)
    return gen


def wait_protected(live, gen, timeout=120):
    """The FT_PROTECTED event of generation @gen on @live (a pair started
    at boot has one of its own); raises on FT_PROTECT_FAILED."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f'{live._name}: no FT_PROTECTED for '
                               f'generation {gen}')
        ev = live.events_wait([('FT_PROTECTED', None),
                               ('FT_PROTECT_FAILED', None)],
                              float(max(1, left)))
        if ev is None:
            continue
        if ev['event'] == 'FT_PROTECT_FAILED':
            raise RuntimeError(f'{live._name}: x-ft-protect failed: '
                               f'{ev["data"]["reason"]}')
        if ev['data']['generation'] == gen:
            return ev['data']


def protect(live, port, mig, timeout=120, host='127.0.0.1'):
    """x-ft-protect on @live and wait until the new backup passed its
    first check; returns the FT_PROTECTED event's data."""
    return wait_protected(live, protect_cmd(live, port, mig, host), timeout)

# The management side of fault-tolerant VMs: their QMP sockets, and the
# operations on a pair (status, protect, switch-over, detach), for
# scripts/ftctl, scripts/ft-evacuate.py and the cluster agent.  Only
# qemu.qmp (the tree's python/qemu) is needed.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import time

from qemu.qmp.legacy import QEMUMonitorProtocol


class Failed(Exception):
    """An operation that could not be done, or went wrong."""


class Qmp:
    """A VM's QMP socket, and the events it sent that nobody took yet."""

    def __init__(self, name, address):
        self.name = name
        self.mon = QEMUMonitorProtocol(
            QEMUMonitorProtocol.parse_address(address), nickname=name)
        self.mon.connect()
        self.events = []

    def cmd(self, command, **args):
        return self.mon.cmd(command, **args)

    def ft(self):
        return self.cmd('x-query-ft')

    def event(self, names, timeout, match=lambda ev: True):
        """The first event named in @names for which @match is true,
        within @timeout s; None on a timeout or a closed connection.
        Each event carries 'seen', when this tool got it (time.time())."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev['event'] in names and match(ev):
                    self.events.remove(ev)
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                # float: the legacy client waits for ever on an int
                ev = self.mon.pull_event(wait=float(left))
            except TimeoutError:
                return None
            except Exception:   # noqa: BLE001  the VM went away
                return None
            if ev:
                ev['seen'] = time.time()
                self.events.append(ev)

    def event_any(self, timeout):
        """The next event, within @timeout s; None otherwise."""
        if self.events:
            return self.events.pop(0)
        try:
            ev = self.mon.pull_event(wait=float(timeout))
        except TimeoutError:
            return None
        if ev:
            ev['seen'] = time.time()
        return ev

    def close(self):
        try:
            self.mon.close()
        except Exception:   # noqa: BLE001  best effort on the way out
            pass


def check_pair(primary, backup):
    """The two sides of one protected pair, streaming; their x-query-ft."""
    p, b = primary.ft(), backup.ft()
    for info, vm, role in ((p, primary, 'primary'), (b, backup, 'backup')):
        if info.get('role') != role or info['state'] != 'streaming':
            raise Failed(f'{vm.name} is not a streaming {role} (role '
                         f'{info.get("role")}, state {info["state"]})')
    if primary.cmd('query-uuid')['UUID'] != backup.cmd('query-uuid')['UUID']:
        raise Failed(f'{primary.name} and {backup.name} are not the same VM '
                     '(-uuid differs)')
    if p['generation'] != b['generation']:
        raise Failed(f'the primary is in generation {p["generation"]}, '
                     f'the backup in {b["generation"]}: not one pair')
    if not b['protected']:
        raise Failed(f'{backup.name} has not passed its first divergence '
                     'check yet: the pair is not protected')
    if not b.get('lock'):
        raise Failed('the pair has no lock directory (rrlock): no planned '
                     'switch-over without it')
    return p, b


def switch_over(primary, backup, timeout):
    """x-ft-go-live on @backup: it goes live, @primary halts."""
    t0 = time.time()
    backup.cmd('x-ft-go-live')
    ev = backup.event(('FT_WENT_LIVE', 'FT_HALTED'), timeout)
    if ev is None or ev['event'] != 'FT_WENT_LIVE':
        raise Failed(f'{backup.name} did not go live: '
                     f'{ev["data"] if ev else "no event"} '
                     f'(x-query-ft: {backup.ft()})')
    halted = primary.event(('FT_HALTED',), 10)
    return {'t0': t0, 't_live': ev['seen'],
            'seen_ms': (ev['seen'] - t0) * 1000,
            'failover_ms': ev['data'].get('failover-ms'),
            'icount': ev['data']['icount'],
            'halted': halted['data']['reason'] if halted else None}


def detach(primary, backup, timeout, keep_backup):
    """x-ft-detach on @primary: it runs on alone, @backup stops (and is
    told to quit unless @keep_backup)."""
    t0 = time.time()
    primary.cmd('x-ft-detach')
    ev = primary.event(('FT_WENT_LIVE', 'FT_HALTED'), timeout)
    if ev is None or ev['event'] != 'FT_WENT_LIVE':
        raise Failed(f'{primary.name} did not run on alone: '
                     f'{ev["data"] if ev else "no event"}')
    out = {'t0': t0, 't_live': ev['seen'], 'seen_ms': (ev['seen'] - t0) *
           1000, 'backup_state': None, 'backup_quit': False}
    # The backup plays what it received and stops in state 'ended'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = backup.ft()['state']
            status = backup.cmd('query-status')['status']
        except Exception:   # noqa: BLE001  it is gone already
            state = status = 'gone'
            break
        if state != 'streaming' and status != 'running':
            break
        time.sleep(0.1)
    out['backup_state'] = f'{state}, {status}'
    if not keep_backup and state != 'gone':
        try:
            backup.cmd('quit')
        except Exception:   # noqa: BLE001  quit races with the exit
            pass
        out['backup_quit'] = True
    return out


def socket_address(addr):
    """QMP SocketAddress of HOST:PORT or unix:PATH."""
    if addr.startswith('unix:'):
        return {'type': 'unix', 'path': addr[5:]}
    host, _, port = addr.rpartition(':')
    if not host or not port.isdigit():
        raise Failed(f'{addr!r}: not HOST:PORT or unix:PATH')
    return {'type': 'inet', 'host': host.strip('[]'), 'port': port}


def protect(vm, address, uri, timeout, tls_creds=None, tls_hostname=None,
            max_pause_ms=None):
    """x-ft-protect on @vm towards the joiner at @address/@uri; the data
    of its FT_PROTECTED event."""
    gen = vm.ft()['generation'] + 1
    args = {'address': socket_address(address), 'uri': uri}
    if tls_creds:
        args['tls-creds'] = tls_creds
    if tls_hostname:
        args['tls-hostname'] = tls_hostname
    if max_pause_ms is not None:
        args['max-pause-ms'] = max_pause_ms
    t0 = time.time()
    vm.cmd('x-ft-protect', **args)
    ev = vm.event(('FT_PROTECTED', 'FT_PROTECT_FAILED'), timeout,
                  lambda e: e['event'] == 'FT_PROTECT_FAILED' or
                  e['data']['generation'] == gen)
    if ev is None:
        raise Failed(f'{vm.name}: no FT_PROTECTED for generation {gen} in '
                     f'{timeout:.0f} s')
    if ev['event'] == 'FT_PROTECT_FAILED':
        raise Failed(f'{vm.name}: x-ft-protect failed: '
                     f'{ev["data"]["reason"]}; the VM runs on alone')
    return dict(ev['data'], t0=t0, t_done=ev['seen'])

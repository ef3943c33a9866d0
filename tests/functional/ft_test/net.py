# Networks of the tests: free ports, network namespaces for the logging
# link (Netns), and the guest's bridged network with a client beside it
# (BridgeNet).  All but the ports need root.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import json
import os
import socket
import subprocess
import sys
import time

# Where this package can be imported from, for the client that runs in
# its own network namespace (python3 -m ft_test.client).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


class Netns:
    """Two network namespaces joined by a veth pair (the logging link)."""

    def __init__(self, tag):
        self.names = (f'ftp{tag}', f'ftb{tag}')
        self.addrs = ('10.77.0.1', '10.77.0.2')
        self.devs = ('ftvp', 'ftvb')

    def exec(self, i, *cmd):
        _run('ip', 'netns', 'exec', self.names[i], *cmd)

    def wrapper(self, i):
        return ['ip', 'netns', 'exec', self.names[i]]

    def __enter__(self):
        self.cleanup()
        for n in self.names:
            _run('ip', 'netns', 'add', n)
        _run('ip', 'link', 'add', self.devs[0], 'netns', self.names[0],
             'type', 'veth', 'peer', 'name', self.devs[1],
             'netns', self.names[1])
        for i in (0, 1):
            self.exec(i, 'ip', 'addr', 'add', self.addrs[i] + '/24', 'dev',
                      self.devs[i])
            self.exec(i, 'ip', 'link', 'set', self.devs[i], 'up')
            self.exec(i, 'ip', 'link', 'set', 'lo', 'up')
        return self

    def link(self, up):
        self.exec(0, 'ip', 'link', 'set', self.devs[0],
                  'up' if up else 'down')

    def cleanup(self):
        for n in self.names:
            subprocess.run(['ip', 'netns', 'del', n], capture_output=True)

    def __exit__(self, *exc):
        self.cleanup()


class BridgeNet:
    """The guest's network: a Linux bridge with one tap per QEMU process
    (primary and backup), and a client in its own network namespace on a
    veth port of the same bridge.  The guest keeps its MAC and IP across a
    failover; the backup's announce moves the MAC to its port.

    @taps (at least 2) is how many taps: those past the first two are for
    the new backups that later join the VM (x-ft-protect), one each.
    """
    GUEST_IP = '10.0.3.15'
    CLIENT_IP = '10.0.3.1'
    MAC = '52:54:00:f7:00:01'

    def __init__(self, tag, taps=2):
        self.br = f'ftbr{tag}'
        self.taps = (f'ftpt{tag}', f'ftbt{tag}') + \
            tuple(f'ftj{i}t{tag}' for i in range(2, taps))
        self.ns = f'ftcl{tag}'
        self.veth = (f'ftvh{tag}', 'ftvc')

    def __enter__(self):
        self.cleanup()
        _run('ip', 'link', 'add', self.br, 'type', 'bridge',
             'forward_delay', '0', 'stp_state', '0')
        _run('ip', 'link', 'set', self.br, 'up')
        for tap in self.taps:
            _run('ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap')
            _run('ip', 'link', 'set', tap, 'master', self.br, 'up')
        _run('ip', 'netns', 'add', self.ns)
        _run('ip', 'link', 'add', self.veth[0], 'type', 'veth', 'peer',
             'name', self.veth[1], 'netns', self.ns)
        _run('ip', 'link', 'set', self.veth[0], 'master', self.br, 'up')
        for cmd in (['ip', 'addr', 'add', self.CLIENT_IP + '/24', 'dev',
                     self.veth[1]],
                    ['ip', 'link', 'set', self.veth[1], 'up'],
                    ['ip', 'link', 'set', 'lo', 'up']):
            _run('ip', 'netns', 'exec', self.ns, *cmd)
        return self

    def cleanup(self):
        subprocess.run(['ip', 'netns', 'del', self.ns], capture_output=True)
        for dev in (self.veth[0], *self.taps, self.br):
            subprocess.run(['ip', 'link', 'del', dev], capture_output=True)

    def __exit__(self, *exc):
        self.cleanup()

    def nic_args(self, side, filters=True):
        """QEMU arguments: virtio-net on this side's tap (0: primary or
        unprotected VM, 1: backup, 2...: the backups that join later);
        with @filters, under the output rule
        (filter-ft-output) and with its input logged (filter-replay).
        """
        args = ['-netdev', f'tap,id=n0,ifname={self.taps[side]},script=no,'
                'downscript=no,vhost=off',
                '-device', f'virtio-net-pci,netdev=n0,mac={self.MAC},'
                'romfile=']
        if filters:
            args += ['-object', 'filter-replay,id=fr0,netdev=n0',
                     '-object', 'filter-ft-output,id=fo0,netdev=n0']
        return args

    def client_cmd(self, *args):
        """The command line of ft_test.client, in the client namespace,
        talking to the guest."""
        return ['ip', 'netns', 'exec', self.ns, 'env',
                f'PYTHONPATH={PACKAGE_PARENT}', sys.executable, '-m',
                'ft_test.client', '--host', self.GUEST_IP, *args]

    def client(self, workdir, conns=4, http_sha=None, wait=0.0):
        """Start the client (echo connections, HTTP downloads) until the
        stop file appears; returns (popen, stop file)."""
        stop = os.path.join(workdir, 'client.stop')
        if os.path.exists(stop):
            os.unlink(stop)
        cmd = self.client_cmd('--conns', str(conns), '--stop', stop,
                              '--wait', str(wait))
        if http_sha:
            cmd += ['--http-sha', http_sha]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True), stop

    @staticmethod
    def client_result(popen, stop, timeout=120):
        with open(stop, 'w'):
            pass
        out, err = popen.communicate(timeout=timeout)
        if popen.returncode != 0:
            raise AssertionError(f'client failed: {err[-2000:]}')
        return json.loads(out)

    @staticmethod
    def echo_report(res):
        """The client's result @res as lines for a person, and the
        failures among them: [(line, failure or None)] per connection."""
        out = []
        for e in res['echo']:
            ok = not e['error'] and e['verified'] > 0
            why = None if ok else (e['error'] or 'nothing echoed')
            out.append((f'TCP connection {e["id"]}: {e["verified"] >> 20} '
                        f'MiB echoed and verified byte for byte, longest '
                        f'stall {e["max_stall_s"]:.2f} s, '
                        + ('no reset' if ok else f'FAILED: {why}'),
                        None if ok else f'TCP connection {e["id"]}: {why}'))
        return out

    def report_client(self, popen, stop):
        """Stop the client, print echo_report()'s lines; its failures."""
        failures = []
        for line, failure in self.echo_report(self.client_result(popen,
                                                                 stop)):
            print(line)
            if failure:
                failures.append(failure)
        return failures

    def measure(self, what, seconds):
        """One of the client's benchmarks (rtt, rx, tx): its figures."""
        out = subprocess.run(self.client_cmd('--measure', what, '--seconds',
                                             str(seconds)),
                             check=True, capture_output=True, text=True,
                             timeout=seconds + 120).stdout
        return json.loads(out)


class ClientNet(BridgeNet):
    """Only the client side of BridgeNet (client(), report_client()),
    in the namespace @ns of a network made elsewhere (a cluster's)."""

    def __init__(self, ns):
        self.ns = ns

# The Debian guest (scripts/build-debian-guest.sh): a bookworm system
# with systemd, sshd and SQLite, booted from the shared disk.  Each test
# gets a qcow2 overlay on the built image, so the image stays as built.
#
#   overlay(path)          a fresh overlay at @path
#   debian_args(img, backup, ip)   QEMU arguments booting it (virtio-blk
#                          under blkreplay ft=on, the image's own kernel)
#   Ssh                    ssh to the guest from a BridgeNet's client
#                          namespace, with the image's key
#   Sqlite                 a SQLite shell in one ssh session: inserts,
#                          each acknowledged once committed
#   fsck(img, scratch)     e2fsck -fn of the overlay's file system
#
# SPDX-License-Identifier: GPL-2.0-or-later

import os
import select
import subprocess
import time

from .config import BUILD, QEMU_IMG
from .workloads import shared_drive

DEBIAN_DIR = os.environ.get('FT_DEBIAN_DIR', os.path.join(BUILD, 'debian'))
IMAGE = os.path.join(DEBIAN_DIR, 'root.img')
KERNEL = os.path.join(DEBIAN_DIR, 'vmlinuz')
INITRD = os.path.join(DEBIAN_DIR, 'initrd')
KEY = os.path.join(DEBIAN_DIR, 'id_ed25519')
MEMORY = 1024


def built():
    return all(os.path.exists(f) for f in (IMAGE, KERNEL, INITRD, KEY))


def overlay(path):
    """A qcow2 overlay at @path on the built image (read-only backing)."""
    subprocess.run([QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-b', IMAGE,
                    '-F', 'raw', path], check=True)
    return path


def debian_args(img, backup, ip=None, gw=None):
    """Boot the Debian guest from the shared disk @img (a qcow2 overlay):
    its own kernel and initrd, root on virtio-blk."""
    append = 'root=/dev/vda rw console=ttyS0 quiet'
    if ip:
        append += f' ft.ip={ip}'
    if gw:
        append += f' ft.gw={gw}'
    return ['-kernel', KERNEL, '-initrd', INITRD, '-append', append] + \
        shared_drive(img, backup, fmt='qcow2', bus='virtio-blk')


def fsck(img, scratch):
    """e2fsck -fn of the file system in overlay @img (converted to a raw
    file @scratch first); returns (exit status, output)."""
    subprocess.run([QEMU_IMG, 'convert', '-O', 'raw', img, scratch],
                   check=True)
    r = subprocess.run(['e2fsck', '-fn', scratch], capture_output=True,
                       text=True)
    os.unlink(scratch)
    return r.returncode, r.stdout + r.stderr


class Ssh:
    """ssh to the guest at @host from network namespace @netns."""

    def __init__(self, netns, host):
        self.netns, self.host = netns, host

    def argv(self, command):
        return ['ip', 'netns', 'exec', self.netns, 'ssh', '-i', KEY,
                '-o', 'StrictHostKeyChecking=no',
                '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
                '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=30',
                '-o', 'ServerAliveInterval=5', '-o', 'ServerAliveCountMax=12',
                f'root@{self.host}', command]

    def run(self, command, timeout=120):
        """Run @command in a new session; returns its stdout (raises on a
        non-zero exit)."""
        r = subprocess.run(self.argv(command), capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f'ssh {command!r}: exit {r.returncode}: '
                                 f'{r.stderr[-1000:]}')
        return r.stdout

    def wait(self, timeout=120):
        """Until a session opens."""
        end = time.monotonic() + timeout
        while True:
            try:
                return self.run('true', timeout=60)
            except (AssertionError, subprocess.TimeoutExpired):
                if time.monotonic() > end:
                    raise
                time.sleep(2)


class Sqlite:
    """sqlite3 on the guest's database @db, in one ssh session kept open:
    insert(n) adds row n in a transaction of its own and returns once the
    guest acknowledged the commit.  Rows acknowledged are in .acked."""

    def __init__(self, ssh, db='/var/lib/ftdb/t.db'):
        self.proc = subprocess.Popen(
            ssh.argv(f'stdbuf -oL sqlite3 -batch {db}'),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1)
        self.acked = []
        self._send('PRAGMA synchronous=FULL;')
        self._send('CREATE TABLE IF NOT EXISTS t '
                   '(n INTEGER PRIMARY KEY, v TEXT NOT NULL);')
        self._send("SELECT 'READY';")
        self._expect('READY', 120)

    def _send(self, sql):
        self.proc.stdin.write(sql + '\n')
        self.proc.stdin.flush()

    def _expect(self, line, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1)
            if ready:
                got = self.proc.stdout.readline()
                if not got:
                    break
                if got.strip() == line:
                    return
            elif self.proc.poll() is not None:
                break
        raise AssertionError(f'sqlite session: no {line!r} within '
                             f'{timeout} s (exit {self.proc.poll()}: '
                             f'{self.proc.stderr.read()[-500:] if self.proc.poll() is not None else ""})')

    def insert(self, n, timeout=120):
        self._send(f"INSERT INTO t VALUES ({n}, 'row {n}'); "
                   f"SELECT 'ACK {n}';")
        self._expect(f'ACK {n}', timeout)
        self.acked.append(n)

    def insert_until(self, stop, errors):
        """Insert rows 1, 2, ... until Event @stop is set (a thread's
        target); the exception that ends it goes to list @errors."""
        n = 0
        try:
            while not stop.is_set():
                n += 1
                self.insert(n)
        except Exception as e:  # noqa: BLE001  the caller reports it
            errors.append(e)

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        return self.proc.returncode

# What the test guest does (guest/init's ft.* knobs) and the devices it
# does it with: one table for the tests and the benchmarks.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import hashlib
import struct
from typing import NamedTuple

from .config import FAST_BOOT


def guest_args(**knobs):
    """Kernel command line with ft.* knobs for the guest's /init."""
    extra = ' '.join(f'ft.{k}={v}' for k, v in knobs.items())
    return f'{FAST_BOOT} {extra}'.strip()


class Workload(NamedTuple):
    knobs: dict             # the guest's ft.* knobs
    disk: bool = False      # an AHCI disk behind blkreplay (disk_args())
    net: bool = False       # virtio-net on slirp (user_net_args())

    def append(self, **extra):
        """The kernel command line, with @extra knobs over the table's."""
        return guest_args(**{**self.knobs, **extra})


USER_NET = dict(ip='10.0.2.15/24', gw='10.0.2.2')

WORKLOADS = {
    'idle': Workload(dict(work='')),
    'ticker': Workload(dict(work='ticker')),
    'cpu': Workload(dict(work='cpu,ticker', cpu_iters=1000000)),
    'disk': Workload(dict(work='disk,ticker', disk_loops=0, disk_mb=4),
                     disk=True),
    'network': Workload(dict(work='echo,ticker', **USER_NET), net=True),
    # Every device and timers, for a run that ends (FT-DONE)
    'baseline': Workload(dict(work='echo,ticker,disk,cpu', ticks=8,
                              disk_mb=2, disk_loops=2, cpu_iters=20,
                              **USER_NET), disk=True, net=True),
}


def disk_args(path):
    """An AHCI disk on image @path, its I/O in the log (blkreplay)."""
    return ['-drive', f'file={path},if=none,id=d0,format=raw',
            '-drive', 'driver=blkreplay,if=none,image=d0,id=d0-rr',
            '-device', 'ide-hd,drive=d0-rr']


def plain_drive(path, fmt='raw'):
    """The guest's AHCI disk on image @path, unprotected, with O_DIRECT
    as the shared disk has: the baseline of the disk benchmarks."""
    return ['-drive', f'file={path},if=none,id=d0,format={fmt},'
            'cache.direct=on', '-device', 'ide-hd,drive=d0']


# The guest's disk as each bus gives it, behind blkreplay: the last
# device gets the drive.
DISK_DEVICES = {
    'ahci': ['ide-hd'],
    'virtio-blk': ['virtio-blk-pci'],
    'virtio-scsi': ['virtio-scsi-pci,id=vs0', 'scsi-hd,bus=vs0.0'],
}


def shared_drive(path, backup, extra='', fmt='raw', bus='ahci',
                 dev_extra=''):
    """The guest's disk on the shared image, through blkreplay ft=on, on
    @bus (a key of DISK_DEVICES), with @dev_extra on its device (werror=,
    rerror=).

    The backup opens the image without taking QEMU's image lock (the
    primary holds it); both use O_DIRECT, as host page caches on two hosts
    would not be coherent.
    """
    lock = ',file.locking=off' if backup else ''
    return ['-drive', f'file={path},if=none,id=d0,format={fmt},'
            f'cache.direct=on{lock}{extra}',
            '-drive', 'driver=blkreplay,if=none,image=d0,id=d0-rr,ft=on'] + \
        [arg for dev in DISK_DEVICES[bus][:-1] for arg in ('-device', dev)] + \
        ['-device', DISK_DEVICES[bus][-1] + ',drive=d0-rr' + dev_extra]


def user_net_args(port=None, replay=True):
    """virtio-net on slirp; host port @port forwarded to the guest's echo
    server; with @replay, its input in the log (filter-replay)."""
    fwd = f',hostfwd=tcp:127.0.0.1:{port}-:7' if port else ''
    args = ['-netdev', 'user,id=n0' + fwd,
            '-device', 'virtio-net-pci,netdev=n0,romfile=']
    if replay:
        args += ['-object', 'filter-replay,id=fr0,netdev=n0']
    return args


def devices(name, side, make_disk, port=None):
    """QEMU arguments for workload @name on @side ('plain', an unprotected
    VM; 'primary'; 'backup'): each side its own 16 MiB disk (made by
    @make_disk(file name, MiB)), the echo server forwarded from host
    @port except on the backup (which sends nothing out)."""
    w = WORKLOADS[name]
    args = []
    if w.disk:
        args += disk_args(make_disk(f'{side}.img', 16))
    if w.net:
        args += user_net_args(port if side != 'backup' else None,
                              replay=side != 'plain')
    return args


# -- the guest's data, made on the host ---------------------------------

def pattern(text, nbytes):
    """The guest's deterministic data (guest/init: pattern), made on the host.

    The same bytes as ``yes TEXT | od -v -A d -t x8 | head -c NBYTES``:
    lines of a 7-digit decimal offset and the two little-endian 64-bit
    words of each 16 bytes of TEXT\\n repeated.  Made here rather than by
    that pipeline, whose producers die of SIGPIPE when head exits.
    """
    unit = (text + '\n').encode()
    src = unit * ((nbytes // 41 + 2) * 16 // len(unit) + 1)
    out = []
    size = 0
    off = 0
    while size < nbytes:
        words = struct.unpack_from('<2Q', src, off)
        line = '%07d %016x %016x\n' % (off, words[0], words[1])
        out.append(line)
        size += len(line)
        off += 16
    return ''.join(out).encode()[:nbytes]


CPU_BUF_BYTES = 262144


def expected_cpu_result(iters):
    """The guest's cpu workload, recomputed on the host (see guest/init)."""
    buf = pattern('ftcpu', CPU_BUF_BYTES)
    h = ''
    for _ in range(iters):
        h = hashlib.sha256(h.encode() + b'\n' + buf).hexdigest()
    return h


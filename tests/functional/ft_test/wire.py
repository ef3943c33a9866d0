# The logging channel's frames (docs/wire-format.md) and lock records
# (docs/lock-record.md), made on the host for fake peers and foreign
# records.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import struct


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC_T = _crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc = _CRC_T[(crc ^ b) & 0xff] ^ (crc >> 8)
    return crc ^ 0xffffffff


FRAME_HELLO, FRAME_DATA, FRAME_ACK, FRAME_HEARTBEAT, FRAME_END = 1, 2, 3, 4, 5
FRAME_CONFIG = 6
PROTO_VERSION = 2       # ft/ft-frame.h FT_PROTO_VERSION
REPLAY_VERSION = 0xe0200f


def frame(ftype, gen=1, offset=0, payload=b'', flags=0,
          version=PROTO_VERSION):
    hdr = struct.pack('<IBBHIIQ', 0x4c544651, version, ftype, flags, gen,
                      len(payload), offset)
    crc = crc32c(hdr + payload)
    hdr += struct.pack('<I', crc)
    return hdr + struct.pack('<I', crc32c(hdr)) + payload


def hello(role, gen=1, offset=0, replay_version=REPLAY_VERSION,
          vm_id=bytes(16)):
    """HELLO payload; role 1 = primary, 2 = backup."""
    return struct.pack('<B3xIIIQ16sI4x', role, replay_version, gen,
                       1 << 20, offset, vm_id, 100)


def lock_record(vm, epoch, role='primary', host='elsewhere', pid=4242,
                nonce='0123456789abcdef', time_ns=1795000000000000000):
    """A valid lock record (docs/lock-record.md), e.g. of another VM."""
    body = (f'qemu-ft-lock 1\nvm {vm}\nepoch {epoch}\nrole {role}\n'
            f'host {host}\npid {pid}\nnonce {nonce}\ntime {time_ns}\n')
    return body + 'crc32c %08x\n' % crc32c(body.encode())
